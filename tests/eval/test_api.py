"""The Python API on already-loaded (model, tokenizer) pairs: generation, each evaluation, reports."""

import pytest

from difflora.errors import UserError
from difflora.evaluation import attention_mass, run_degeneration, run_icl, run_nih, write_report
from difflora.evaluation.generation import check_length, generate, measure_fn, render


def test_batched_left_padded_generation_matches_one_at_a_time(loaded):
    prompts = ["What is the capital of France?", "label: 3", "One of the special magic numbers for apple is: 1234567. "
               "What is the special magic number for apple?"]
    for label, (model, tokenizer) in loaded.items():
        texts = [render(tokenizer, p) for p in prompts]
        batched = generate(model, tokenizer, texts, max_new_tokens=6, batch_size=3)
        single = [generate(model, tokenizer, [t], max_new_tokens=6, batch_size=1)[0] for t in texts]
        assert batched == single, label


def test_rendering_with_and_without_the_chat_template(loaded):
    _, tokenizer = loaded["base"]
    chat = render(tokenizer, "Q?", " A", chat=None)
    assert chat.startswith(tokenizer.bos_token) and chat.endswith("?") is False and chat.endswith("A")
    assert "Q?" in chat and chat != render(tokenizer, "Q?", " A", chat=False)
    assert render(tokenizer, "Q?", "label:", chat=False, separator="\n") == tokenizer.bos_token + "Q?\nlabel:"
    assert measure_fn(tokenizer, chat=False)("Q?", " A") == len(tokenizer(tokenizer.bos_token + "Q? A",
                                                                          add_special_tokens=False)["input_ids"])


def test_length_check(loaded):
    model, _ = loaded["difflora"]
    check_length(model, 4000, 96)
    with pytest.raises(UserError, match="exceed difflora's max_position_embeddings"):
        check_length(model, 4090, 8, "difflora")


def test_each_evaluation_on_loaded_models(loaded, tmp_path):
    nih = run_nih(loaded, tasks=("mk2",), lengths=(300,), n_samples=2, seed=3, max_new_tokens=8, show_progress=False)
    assert set(nih) == set(loaded) and set(nih["lora"]["mk2"][300]) == {"mean", "ci_low", "ci_high", "n"}
    assert nih["lora"]["mk2"][300]["n"] == 2
    assert nih == run_nih(loaded, tasks=("mk2",), lengths=(300,), n_samples=2, seed=3, max_new_tokens=8,
                          show_progress=False), "deterministic"
    noise = run_nih({"base": loaded["base"]}, tasks=("mk3",), lengths=(300,), n_samples=1, haystack="noise",
                    max_new_tokens=4, show_progress=False, out_dir=str(tmp_path))
    assert noise["base"]["mk3"][300]["n"] == 1
    assert '"haystack": "noise"' in (tmp_path / "nih_samples.jsonl").read_text()

    icl = run_icl(loaded, shots=(0, 6), n_samples=2, show_progress=False)
    assert set(icl["difflora"]) == {0, 6} and icl["difflora"][6]["prompt_tokens"] > icl["difflora"][0]["prompt_tokens"]

    deg = run_degeneration(loaded, ["Say hello.", "Count to three."], max_new_tokens=6, show_progress=False)
    assert deg["base"]["rate"]["n"] == 2

    mass = attention_mass({"difflora": loaded["difflora"]}, length=300, n_prompts=1, task="mv")
    assert set(mass["difflora"]["mean"]) == {"positive", "negative", "net"}

    md, html = write_report([{"nih": nih, "icl": icl, "degeneration": deg, "attention": mass}], str(tmp_path / "rep"))
    text = open(md).read()
    assert "| lora |" in text and "ICL @ 6 shots" in text and "figures/icl.png" in text


def test_bad_api_inputs(loaded):
    with pytest.raises(UserError, match="unknown needle task 'mk9'"):
        run_nih(loaded, tasks=("mk9",), lengths=(300,), show_progress=False)
    with pytest.raises(UserError, match="unknown haystack"):
        run_nih(loaded, tasks=("mk2",), lengths=(300,), haystack="hay", show_progress=False)
    with pytest.raises(UserError, match="no prompts"):
        run_degeneration(loaded, [], show_progress=False)
    with pytest.raises(UserError, match="needs out_dir"):
        write_report([{"nih": {}}])


def test_icl_with_separate_demonstration_and_test_splits(loaded, tmp_path):
    import json

    for split, n in (("train", 12), ("test", 3)):
        (tmp_path / f"{split}.jsonl").write_text("\n".join(json.dumps({"text": f"{split} text {i}", "label": i % 3})
                                                           for i in range(n)))
    run_icl({"base": loaded["base"]}, shots=(3,), n_samples=3, data=str(tmp_path), test_data=str(tmp_path),
            out_dir=str(tmp_path / "out"), show_progress=False)
    rows = [json.loads(line) for line in open(tmp_path / "out" / "icl_samples.jsonl")]
    assert sorted(r["text"] for r in rows) == ["test text 0", "test text 1", "test text 2"]
