"""The retrieved context fits a token budget: blocks kept by rank, the last one cut at a sentence end."""

from langchain_core.documents import Document

from chatbot.rag.prompting import fit_blocks


def words(text: str) -> int:
    return len(text.split())


def test_blocks_are_kept_by_rank_and_cut_only_at_sentence_ends():
    blocks = [
        Document("One two three. Four five.", metadata={"source": "a"}),  # 5 words
        Document("Six seven eight. Nine ten eleven. Twelve.", metadata={"source": "b"}),  # 7 words
        Document("Never reached.", metadata={"source": "c"}),
    ]
    assert fit_blocks(blocks, 100, words) == blocks
    fitted = fit_blocks(blocks, 11, words)  # 5 whole + 6 left: "Six seven eight. Nine ten eleven."
    assert [d.metadata["source"] for d in fitted] == ["a", "b"]
    assert fitted[0] is blocks[0] and fitted[1].page_content == "Six seven eight. Nine ten eleven."
    assert fitted[1].metadata["trimmed"] is True
    assert [d.page_content for d in fit_blocks(blocks, 7, words)] == ["One two three. Four five."]
    assert fit_blocks(blocks, 2, words) == []  # not even one sentence fits


def test_the_chain_respects_the_budget_with_the_model_tokenizer(make_bot, user_guide):
    question = "How do I refresh the knowledge base?"
    roomy = make_bot(max_new_tokens=8)
    roomy.sync()
    full = roomy.ask(question)
    tight = make_bot(max_new_tokens=8, context_tokens=120)
    answer = tight.ask(question)
    count = tight.chain.llm.count_tokens
    kept = tight.chain.fit(tight.chain.retrieve(question))
    assert (
        sum(count(doc.page_content) for doc in kept)
        <= 120
        < sum(count(d.page_content) for d in roomy.chain.retrieve(question))
    )
    assert len(answer.retrieved) == len(kept) < len(full.retrieved)
    assert answer.retrieved[0].chunk_id == full.retrieved[0].chunk_id  # the best block survives
    assert answer.usage["prompt_tokens"] < full.usage["prompt_tokens"]
