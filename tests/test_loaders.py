import json
import os
import zipfile

import pytest

from chatbot.knowledge.loaders import LoadError, LoadLimits, load_file
from chatbot.knowledge.scan import scan_folder
from tests.office import make_deck
from tests.pdfs import make_pdf


def test_pdf_pages_are_numbered_from_one(tmp_path):
    path = make_pdf(tmp_path / "r.pdf", ["first page text", "second page text"])
    pages = load_file(path)
    assert [(p.number, p.text.strip()) for p in pages] == [(1, "first page text"), (2, "second page text")]


def test_pdf_encrypted_with_empty_password_is_opened(tmp_path):
    path = make_pdf(tmp_path / "e.pdf", ["secret quarterly revenue"], password="")
    assert "quarterly revenue" in load_file(path)[0].text


def test_pdf_that_needs_a_password_is_refused(tmp_path):
    path = make_pdf(tmp_path / "p.pdf", ["hidden"], password="hunter2")
    with pytest.raises(LoadError, match="password"):
        load_file(path)


def test_corrupt_pdf_is_refused_with_reason(tmp_path):
    path = tmp_path / "bad.pdf"
    path.write_bytes(b"%PDF-1.4\n garbage \x00\x01 not a pdf")
    with pytest.raises(LoadError, match="PDF"):
        load_file(path)


def test_binary_junk_named_txt_is_refused(tmp_path):
    path = tmp_path / "junk.txt"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(LoadError, match="binary"):
        load_file(path)


def test_non_utf8_text_is_decoded(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("Le café coûte très cher à Zürich, déjà noté.".encode("cp1252"))
    assert "café" in load_file(path)[0].text


def test_utf8_bom_is_dropped(tmp_path):
    path = tmp_path / "bom.md"
    path.write_bytes("\ufeff# Title".encode())
    assert load_file(path)[0].text == "# Title"


def test_scan_skips_hidden_temporary_unsupported_oversized_and_outside_links(tmp_path):
    root = tmp_path / "kb"
    (root / "sub").mkdir(parents=True)
    (root / "ok.md").write_text("hello")
    (root / "sub" / "deep.txt").write_text("deep")
    (root / ".hidden.md").write_text("x")
    (root / "~$lock.md").write_text("x")
    (root / "notes.md.swp").write_text("x")
    (root / "image.png").write_bytes(b"\x89PNG")
    (root / "budget.XLS").write_bytes(b"\xd0\xcf\x11\xe0")
    (root / "big.txt").write_text("x" * 2000)
    outside = tmp_path / "secret.txt"
    outside.write_text("do not index")
    (root / "escape.txt").symlink_to(outside)
    (root / "inside.txt").symlink_to(root / "ok.md")
    result = scan_folder(root, max_bytes=1000)
    assert set(result.files) == {"ok.md", "sub/deep.txt"}  # the link inside would index ok.md twice
    assert "outside" in result.skipped["escape.txt"]
    assert "symlink" in result.skipped["inside.txt"]
    assert result.skipped["image.png"] == "unsupported file type .png"
    assert result.skipped["budget.XLS"] == "unsupported file type .XLS (an old binary Office format: save it as .xlsx)"
    assert "limit" in result.skipped["big.txt"]
    assert not {".hidden.md", "~$lock.md", "notes.md.swp"} & set(result.skipped)


def test_html_keeps_visible_text_and_headings_without_markup(tmp_path):
    path = tmp_path / "page.html"
    path.write_text(
        "<html><head><title>t</title><style>p{color:red}</style><script>var x=1;</script></head>"
        "<body><h1>Returns</h1><p>Items can be returned within <b>30 days</b>.</p></body></html>",
        encoding="latin-1",
    )
    text = load_file(path)[0].text
    assert text.startswith("# Returns")
    assert "30 days" in text and "<" not in text and "var x" not in text and "color" not in text


def test_docx_paragraphs_headings_and_tables_are_read(tmp_path):
    import docx

    document = docx.Document()
    document.add_heading("Warranty", level=1)
    document.add_paragraph("The warranty lasts two years.")
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text, table.rows[0].cells[1].text = "Model X", "24 months"
    document.save(tmp_path / "w.docx")
    text = load_file(tmp_path / "w.docx")[0].text
    assert "# Warranty" in text and "two years" in text and "Model X | 24 months" in text


def test_docx_that_is_not_a_zip_is_refused(tmp_path):
    (tmp_path / "fake.docx").write_bytes(b"not a word file at all")
    with pytest.raises(LoadError, match="DOCX"):
        load_file(tmp_path / "fake.docx")


def test_csv_rows_are_records_labelled_with_their_columns(tmp_path):
    (tmp_path / "prices.csv").write_text("product;price; \nLamp;12 EUR;\n;;\nDesk;150 EUR;oak\n")
    page = load_file(tmp_path / "prices.csv")[0]
    assert [(record.text, record.label) for record in page.records] == [
        ("product: Lamp; price: 12 EUR", "row 2"),  # the row numbers a spreadsheet shows
        ("product: Desk; price: 150 EUR; column 3: oak", "row 4"),
    ]
    assert page.text == "product: Lamp; price: 12 EUR\nproduct: Desk; price: 150 EUR; column 3: oak"


def test_json_leaves_become_keyed_lines_and_bad_json_is_refused(tmp_path):
    (tmp_path / "faq.json").write_text('{"shop": {"hours": "9-17", "days": ["Mon", "Tue"]}}')
    page = load_file(tmp_path / "faq.json")[0]
    assert page.text == "shop.hours: 9-17\nshop.days[0]: Mon\nshop.days[1]: Tue"
    # the file's top level, under its one-key wrapper, is split into its sections, however small
    assert [(record.label, record.text) for record in page.records] == [
        ("shop", "shop.hours: 9-17"),
        ("shop.days", "shop.days[0]: Mon\nshop.days[1]: Tue"),
    ]
    (tmp_path / "item.json").write_text('{"name": "Parka", "price": 349, "tags": ["warm", "down"]}')
    assert [record.label for record in load_file(tmp_path / "item.json")[0].records] == ["", "tags"]
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(LoadError, match="invalid JSON"):
        load_file(tmp_path / "bad.json")


def test_a_large_json_value_is_split_into_its_members_in_order(tmp_path):
    from chatbot.knowledge.loaders import RECORD_CHARS

    products = [{"name": f"Lamp {n}", "price": n, "tags": ["desk", "led"]} for n in range(60)]
    note = "x" * RECORD_CHARS  # a member over the limit on its own
    (tmp_path / "shop.json").write_text(
        json.dumps({"store": "Lumen", "products": products, "about": {"since": 1990, "note": note}, "city": "Graz"})
    )
    found = load_file(tmp_path / "shop.json")[0].records
    records = [record.text for record in found]
    labels = [record.label for record in found]
    assert labels == ["", *(f"products[{n}]" for n in range(60)), "about", "about"]  # where each one is
    assert records[0] == "store: Lumen\ncity: Graz"  # the plain values of a split object, together
    lamp = "products[0].name: Lamp 0\nproducts[0].price: 0\nproducts[0].tags[0]: desk\nproducts[0].tags[1]: led"
    assert records[1] == lamp
    assert all(record.startswith(f"products[{n}].name: Lamp {n}\n") for n, record in enumerate(records[1:61]))
    assert records[61:] == ["about.since: 1990", f"about.note: {note}"]  # plain values gathered up to the limit
    (tmp_path / "export.json").write_text(json.dumps({"title": "Tea", "paragraphs": ["a" * 600, "b" * 600, "c" * 300]}))
    records = [record.text for record in load_file(tmp_path / "export.json")[0].records]
    last_two = f"paragraphs[1]: {'b' * 600}\nparagraphs[2]: {'c' * 300}"  # gathered: 948 characters
    assert records == ["title: Tea", f"paragraphs[0]: {'a' * 600}", last_two]


def test_spreadsheet_rows_are_records_of_every_sheet_with_their_headers(tmp_path):
    import datetime

    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Stock"
    sheet.append(["Inventory, November"])  # a title above the table
    sheet.append([])
    sheet.append(["SKU", "Name", "Price", None, "Since"])
    sheet.append(["A-1", "Down Parka", 349.0, None, datetime.datetime(2024, 3, 1)])
    sheet.append(["A-2", "Trail Shoe", 129.99, "extra", datetime.datetime(2024, 3, 1, 9, 30)])
    book.create_sheet("Notes").append(["Returns within 30 days"])
    book.save(tmp_path / "stock.xlsx")
    records = load_file(tmp_path / "stock.xlsx")[0].records
    assert [(record.label, record.text) for record in records] == [
        ("Stock row 1", "Inventory, November"),
        ("Stock row 4", "SKU: A-1; Name: Down Parka; Price: 349; Since: 2024-03-01"),
        ("Stock row 5", "SKU: A-2; Name: Trail Shoe; Price: 129.99; D: extra; Since: 2024-03-01 09:30:00"),
        ("Notes row 1", "Returns within 30 days"),
    ]


def test_a_spreadsheet_of_far_flung_cells_is_refused_by_its_cell_count(tmp_path):
    import openpyxl

    book = openpyxl.Workbook()
    for row in range(1, 400):
        book.active.cell(row=row, column=16_000, value=row)  # each row read as 16,000 cells
    book.save(tmp_path / "wide.xlsx")
    with pytest.raises(LoadError, match="more than 1,000,000 cells.*max_file_chars"):  # 399 values, 6.4 M cells
        load_file(tmp_path / "wide.xlsx", LoadLimits(max_chars=1_000_000))
    small = tmp_path / "small.xlsx"
    book = openpyxl.Workbook()
    book.active.append(["name", "price"])
    for number in range(400):
        book.active.append([f"Lamp {number}", 12])
    book.save(small)
    with zipfile.ZipFile(small) as archive:
        parts = {name: archive.read(name) for name in archive.namelist()}
    sheet = parts["xl/worksheets/sheet1.xml"].decode()
    assert '<dimension ref="A1:B401"' in sheet
    parts["xl/worksheets/sheet1.xml"] = sheet.replace('ref="A1:B401"', 'ref="A1:XFD1048576"').encode()
    with zipfile.ZipFile(small, "w") as archive:  # as a sheet formatted whole says it is: every cell
        for name, data in parts.items():
            archive.writestr(name, data)
    records = load_file(small)[0].records  # read as stored: not padded out to 6.5 M cells, which is refused
    assert len(records) == 400 and records[-1].text == "name: Lamp 399; price: 12"
    (tmp_path / "fake.xlsx").write_bytes(b"not a spreadsheet")
    with pytest.raises(LoadError, match="XLSX"):
        load_file(tmp_path / "fake.xlsx")


def test_slides_are_pages_with_their_title_as_heading_then_text_tables_and_notes(tmp_path):
    pages = load_file(make_deck(tmp_path / "deck.pptx"))
    assert [page.number for page in pages] == [1, 2, 3]
    assert pages[0].text == (
        "# Returns policy\n\nUnworn items within 30 days\n\nRefunds in 5 business days\n\n"
        "Notes: Mention the holiday extension to 60 days."
    )
    assert pages[1].text == "# Prices\n\nItem | Price\n\nParka | $349\n\nVAT included"
    assert pages[2].text == ""  # a blank slide
    (tmp_path / "fake.pptx").write_bytes(b"PK not really")
    with pytest.raises(LoadError, match="PPTX"):
        load_file(tmp_path / "fake.pptx")


def test_json_lines_are_records_located_by_their_line(tmp_path):
    lines = ['{"user": "ada", "said": "hello"}', "", '{"user": "bob", "said": "bye"}', '"a note"']
    (tmp_path / "log.jsonl").write_text("\n".join(lines) + "\n")
    records = load_file(tmp_path / "log.jsonl")[0].records
    assert [(record.label, record.text) for record in records] == [
        ("line 1", "user: ada\nsaid: hello"),
        ("line 3", "user: bob\nsaid: bye"),
        ("line 4", "a note"),
    ]
    (tmp_path / "bad.jsonl").write_text('{"a": 1}\n{oops\n')
    with pytest.raises(LoadError, match="invalid JSON on line 2"):
        load_file(tmp_path / "bad.jsonl")


def test_utf16_text_with_bom_is_decoded(tmp_path):
    (tmp_path / "u16.txt").write_bytes("Grüße aus Köln".encode("utf-16"))
    assert load_file(tmp_path / "u16.txt")[0].text == "Grüße aus Köln"


@pytest.mark.shared_data
@pytest.mark.parametrize("name", ["2023 Q1 MSFT.pdf", "2023 Q2 MSFT.pdf", "2023 Q3 AAPL.pdf"])
def test_sec_filings_that_stop_pypdf_or_are_encrypted_are_read(shared_data, name):
    pages = load_file(shared_data / "sec10q" / "docs" / name)
    assert len(pages) > 20 and sum(len(page.text) for page in pages) > 50_000
    assert any(word in page.text.lower() for page in pages[:3] for word in ("microsoft", "apple"))


def test_a_zip_bomb_docx_is_refused_from_its_directory_before_anything_is_inflated(tmp_path):
    import zipfile

    from chatbot.knowledge.loaders import LoadLimits

    bomb = tmp_path / "bomb.docx"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", b" " * 30_000_000)  # 30 MB of XML in ~30 KB
    assert bomb.stat().st_size < 200_000
    with pytest.raises(LoadError, match="expands to 30 MB.*max_unzipped_mb"):
        load_file(bomb, LoadLimits(max_unzipped_bytes=10_000_000))
    crowded = tmp_path / "crowded.docx"
    with zipfile.ZipFile(crowded, "w") as archive:
        for number in range(30):
            archive.writestr(f"part{number}.xml", b"<x/>")
    with pytest.raises(LoadError, match="30 zip entries.*max_zip_entries"):
        load_file(crowded, LoadLimits(max_zip_entries=20))


def test_page_and_character_limits_refuse_files_by_name(tmp_path):
    from chatbot.knowledge.loaders import LoadLimits

    pdf = make_pdf(tmp_path / "long.pdf", ["one", "two", "three"])
    with pytest.raises(LoadError, match="3 pages.*max_pdf_pages"):
        load_file(pdf, LoadLimits(max_pages=2))
    assert len(load_file(pdf, LoadLimits(max_pages=3))) == 3
    small = LoadLimits(max_chars=1000)
    (tmp_path / "long.md").write_text("word " * 400)
    (tmp_path / "wide.json").write_text(json.dumps({"k": [f"value {n}" for n in range(200)]}))
    (tmp_path / "rows.csv").write_text("a,b\n" + "x,y\n" * 300)
    for name in ("long.md", "wide.json", "rows.csv"):
        with pytest.raises(LoadError, match="1,000 characters"):
            load_file(tmp_path / name, small)
        assert load_file(tmp_path / name)[0].text  # the default limits read them


def test_the_sync_applies_the_file_limits_from_the_settings(make_bot, knowledge):
    (knowledge / "ok.md").write_text("A short note about returns.")
    (knowledge / "huge.md").write_text("word " * 600)
    report = make_bot(max_file_chars=1000).sync()
    assert report.added == ["ok.md"] and "max_file_chars" in report.errors["huge.md"]


ARTICLE = """<!DOCTYPE html><html lang="en"><head><title>Kangaroo - Example Wiki</title>
<script>window.track = function () { return 1; };</script><style>.nav { color: red }</style></head>
<body>
<header><a href="/">Example Wiki</a> <form><input name="q" placeholder="Search"></form></header>
<nav><ul><li><a href="/">Main page</a></li><li><a href="/random">Random article</a></li>
<li><a href="/donate">Donate to the wiki</a></li></ul></nav>
<aside class="sidebar"><h3>Languages</h3><ul><li><a href="/de">Deutsch</a></li><li><a href="/fr">Francais</a></li>
<li><a href="/es">Espanol</a></li></ul></aside>
<main><article>
<h1>Kangaroo</h1>
<p>A <a href="/wiki/kangaroo">kangaroo</a> is a <b>marsupial</b> from the family <a href="/wiki/m">Macropodidae</a>.
It is native to <em>Australia</em> and New Guinea, and it moves by hopping on its strong hind legs.</p>
<h2>Diet</h2>
<p>Kangaroos are herbivores. They graze on grasses and shrubs, mostly at night and in the early
morning, and a red kangaroo can go for long periods without drinking any water at all.</p>
</article></main>
<footer><p>Copyright 2026 Example Wiki Foundation. All rights reserved.</p>
<p><a href="/privacy">Privacy policy</a> | <a href="/terms">Terms of use</a></p></footer>
</body></html>"""


def test_a_saved_article_page_keeps_its_main_text_in_paragraphs_and_drops_the_page_furniture(tmp_path):
    from chatbot.knowledge.chunking import Chunker
    from chatbot.models.embedded import minilm_folder

    path = tmp_path / "kangaroo.html"
    path.write_text(ARTICLE, encoding="utf-8")
    text = load_file(path)[0].text
    # inline links and emphasis stay inside their sentence, with no Markdown emphasis left
    assert "A kangaroo is a marsupial from the family Macropodidae." in text
    assert "*" not in text
    for furniture in ("Random article", "Donate", "Deutsch", "Languages", "Copyright", "Privacy", "track", "Search"):
        assert furniture not in text, furniture
    chunks = Chunker.for_embedding_model(minilm_folder(), 200, 20).split("kangaroo.html", load_file(path), "html")
    sections = {chunk.metadata.get("section") for chunk in chunks}
    assert {"Kangaroo", "Kangaroo > Diet"} <= sections


SHORT_ARTICLE = """<html><head><title>Heron feeding</title><script>var x = "tracking code";</script></head>
<body><header><a href="/">City Zoo</a></header>
<nav><a href="/">Home</a> | <a href="/visit">Plan your visit</a></nav>
<main><h1>Feeding the herons</h1>
<p>The herons are fed at 10:30 and 15:00 every day at the north pond.</p>
<p>Visitors may watch from the boardwalk.</p>
<p>Please do not bring your own fish.</p></main>
<div role="navigation"><a href="/map">Site map</a></div>
<div hidden>Subscribe to our newsletter</div>
<footer>Privacy policy | Terms of use | Donate now</footer></body></html>"""


def test_a_short_saved_page_keeps_its_paragraphs_and_drops_navigation_footer_and_scripts(tmp_path):
    from chatbot.knowledge.web_page import MAIN_CONTENT_FROM

    path = tmp_path / "herons.html"
    path.write_text(SHORT_ARTICLE, encoding="utf-8")
    text = load_file(path)[0].text
    assert len(text) < MAIN_CONTENT_FROM  # the short-page path, not the main-content extractor
    assert "# Feeding the herons" in text
    assert "The herons are fed at 10:30 and 15:00 every day at the north pond." in text
    assert "Please do not bring your own fish." in text
    for furniture in ("Privacy", "Donate", "tracking", "Plan your visit", "City Zoo", "Site map", "newsletter"):
        assert furniture not in text, furniture
