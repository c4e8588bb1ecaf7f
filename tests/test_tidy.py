"""Answer tidying and context-dump detection on the shapes small models produce."""

from chatbot.rag.tidy import drop_structure, is_context_dump, markers_to_sentence_end, tidy, trim_cut_off

BLOCK = (
    "# The knowledge base\n\nThe app watches the knowledge folder. It indexes new and changed files. "
    "It removes deleted files from the index. Sync runs at start-up and on demand."
)


def test_a_paste_of_headers_and_markers_is_no_answer_and_is_a_dump():
    raw = "[1] # The knowledge base [2] # The knowledge base"
    assert tidy(raw) == "" and is_context_dump(raw, [BLOCK])
    assert drop_structure("| Name | Size |\n|---|---|\nThe file is small [1].") == "The file is small [1]."


def test_passages_copied_from_several_blocks_are_a_dump_but_quoting_the_one_that_answers_is_not():
    other = "# Limits\n\nFiles over 50 MB are skipped. Hidden files are skipped. Lock files are skipped too."
    copied = (
        "The app watches the knowledge folder. It indexes new and changed files. "
        "Files over 50 MB are skipped. Hidden files are skipped."
    )
    assert is_context_dump(copied, [BLOCK, other])
    quoted = "The app watches the knowledge folder. It indexes new and changed files. It removes deleted files."
    assert not is_context_dump(quoted, [BLOCK, other])
    assert not is_context_dump("The app watches the knowledge folder [1].", [BLOCK])
    own = "Drop the file into the folder. The watcher picks it up. Then ask your question again."
    assert not is_context_dump(own, [BLOCK, other])


def test_lines_wrapped_mid_sentence_are_joined_and_list_items_kept():
    wrapped = "Drop new files into the folder, edit files there or\ndelete them, then run `chatbot sync`."
    assert tidy(wrapped) == "Drop new files into the folder, edit files there or delete them, then run `chatbot sync`."
    assert tidy("Steps:\n- Open it\n- Save it") == "Steps:\n- Open it\n- Save it"


def test_markers_move_to_sentence_ends_and_bare_markers_join_the_sentence_before():
    assert markers_to_sentence_end("The warranty [2] lasts two years.") == "The warranty lasts two years [2]."
    assert markers_to_sentence_end("It lasts two years.\n[1][3]") == "It lasts two years [1] [3]."
    assert markers_to_sentence_end("Yes [1], and no [2].") == "Yes, and no [1] [2]."


def test_a_cut_off_tail_and_repeats_are_trimmed_but_list_items_stay():
    assert trim_cut_off("It lasts two years [1]. After that the") == "It lasts two years [1]."
    assert trim_cut_off("Steps:\n- Open the folder\n- Drop the file") == "Steps:\n- Open the folder\n- Drop the file"
    assert trim_cut_off("Only one unfinished") == "Only one unfinished"
    assert tidy("It lasts two years. It lasts two years. It lasts two years.") == "It lasts two years."


def test_a_model_stopped_at_its_token_limit_loses_its_unfinished_last_item():
    raw = "Steps:\n- Run `chatbot sync` [1].\n- Delete the files you no longer want"
    assert tidy(raw) == raw  # it may have ended there: a list item of its own is left alone
    assert tidy(raw, truncated=True) == "Steps:\n- Run `chatbot sync` [1]."  # it was stopped: the item is cut
    wrapped = "1. Run `chatbot sync` [1].\n2. To delete files, drop them from the folder, edit them or\ndelete, then"
    assert tidy(wrapped, truncated=True) == "Run `chatbot sync` [1]."  # an unfinished item over two lines
    finished = "Steps:\n- Open the folder\n- Drop the file [1]."
    assert tidy(finished, truncated=True) == finished  # complete sentences stay whatever stopped the model
    assert tidy("Only one unfinished", truncated=True) == "Only one unfinished"


def test_a_list_of_one_loses_its_number_and_real_lists_keep_theirs():
    assert tidy("1.  To refresh it, run `chatbot sync` [1].") == "To refresh it, run `chatbot sync` [1]."
    assert tidy("1. Open it [1].\n2. Save it [1].") == "1. Open it [1].\n2. Save it [1]."


def test_a_list_number_with_nothing_after_it_is_dropped():
    # the user guide's first question, as the embedded model answered it: a second item cut off
    raw = "1. To refresh it, run `chatbot sync` [1]. Unchanged files cost a hash check [1].\n\n2. To delete files, you"
    assert tidy(raw) == "To refresh it, run `chatbot sync` [1]. Unchanged files cost a hash check [1]."
    assert tidy(raw.rsplit(" To delete", 1)[0]) == tidy(raw)  # the model stopped at "2."
    assert tidy("1. Open it [1].\n2.\n3. Save it [1].") == "1. Open it [1].\n3. Save it [1]."
    assert tidy("It costs 2.5 million [1].") == "It costs 2.5 million [1]."  # a figure is not a list number
