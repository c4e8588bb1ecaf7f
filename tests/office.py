"""Office documents written by their libraries for the loader and sync tests."""


def make_deck(path):
    """A slide deck: a bullet slide with speaker notes, a slide with a table and a group, a blank one."""
    import pptx
    from pptx.util import Inches

    deck = pptx.Presentation()
    first = deck.slides.add_slide(deck.slide_layouts[1])
    first.shapes.title.text = "Returns policy"
    body = first.placeholders[1].text_frame
    body.text = "Unworn items within 30 days"
    body.add_paragraph().text = "Refunds in 5 business days"
    first.notes_slide.notes_text_frame.text = "Mention the holiday extension to 60 days."
    second = deck.slides.add_slide(deck.slide_layouts[5])
    second.shapes.title.text = "Prices"
    table = second.shapes.add_table(2, 2, Inches(1), Inches(2), Inches(6), Inches(1)).table
    for row, values in enumerate([["Item", "Price"], ["Parka", "$349"]]):
        for column, value in enumerate(values):
            table.cell(row, column).text = value
    second.shapes.add_group_shape().shapes.add_textbox(Inches(1), Inches(5), Inches(3), Inches(1)).text = "VAT included"
    deck.slides.add_slide(deck.slide_layouts[6])
    deck.save(path)
    return path
