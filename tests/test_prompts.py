"""Prompt files in the formats benchmarks are published in, prompt shards, and merging shards in the report."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from srsoup.errors import SrsoupError
from srsoup.prompts import load_prompts, shard_indices


def write(tmp_path, name: str, data: str | bytes):
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return str(path)


def test_txt_one_prompt_a_line(tmp_path):
    path = write(tmp_path, "p.txt", "\ufeffa red circle\r\n\r\n# a comment\r\n  a blue square  \n")
    assert load_prompts(None, path) == ["a red circle", "a blue square"]


def test_json_list_and_hpdv2_categories(tmp_path):
    assert load_prompts(None, write(tmp_path, "l.json", '["a cat", "a dog"]')) == ["a cat", "a dog"]
    records = write(tmp_path, "r.json", json.dumps([{"caption": "a cat"}, {"caption": "a dog"}]))
    assert load_prompts(None, records) == ["a cat", "a dog"]
    # HPDv2's benchmark prompts: style -> list (hpsv2.benchmark_prompts('all')).
    hpd = write(tmp_path, "hpd.json", json.dumps({"anime": ["a1", "a2", "a3"], "photo": ["p1", "p2"]}))
    assert load_prompts(None, hpd) == ["a1", "a2", "a3", "p1", "p2"]
    assert load_prompts(None, hpd, category="photo") == ["p1", "p2"]
    assert load_prompts(None, hpd, category=["photo", "anime"], limit=4) == ["a1", "a2", "a3", "p1"]
    with pytest.raises(SrsoupError, match="prompts.category='paintings' is not in .*; valid: anime, photo"):
        load_prompts(None, hpd, category="paintings")


def test_jsonl_geneval_metadata(tmp_path):
    lines = [
        {"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"},
        {"tag": "counting", "include": [{"class": "cat", "count": 2}], "prompt": "a photo of two cats"},
        {"tag": "counting", "include": [{"class": "dog", "count": 3}], "prompt": "a photo of three dogs"},
    ]
    path = write(tmp_path, "evaluation_metadata.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n")
    assert load_prompts(None, path) == [x["prompt"] for x in lines]
    assert load_prompts(None, path, category="counting", limit=1) == ["a photo of two cats"]
    with pytest.raises(SrsoupError, match="prompts.column='text' is not a field .*; valid: tag, include, prompt"):
        load_prompts(None, path, column="text")


def test_tsv_partiprompts_and_csv_drawbench(tmp_path):
    parti = "Prompt\tCategory\tChallenge\tNote\n"
    parti += 'A sign that says "Deep Learning"\tArtifacts\tWriting & Symbols\t\n'
    parti += "a horse\tAnimals\tBasic\tsimple\n"
    path = write(tmp_path, "PartiPrompts.tsv", parti)
    assert load_prompts(None, path) == ['A sign that says "Deep Learning"', "a horse"]
    assert load_prompts(None, path, category="Animals") == ["a horse"]
    assert load_prompts(None, path, column="Note", category="Animals") == ["simple"]
    drawbench = (
        'Prompts,Category\n"A red colored car, on a road.",Colors\nA pink giraffe.,Colors\nFive cars.,Counting\n'
    )
    path = write(tmp_path, "drawbench.csv", drawbench)
    assert load_prompts(None, path) == ["A red colored car, on a road.", "A pink giraffe.", "Five cars."]
    assert load_prompts(None, path, category="Counting") == ["Five cars."]


@pytest.mark.parametrize(
    "name,data,kwargs,message",
    [
        (
            "p.txt",
            b"caf\xe9 au lait\n",
            {},
            r"is not UTF-8 text \(byte 0xe9 at offset 3\); convert it, e.g. iconv",
        ),
        ("p.yaml", "- a\n", {}, "has the suffix '.yaml'; valid: .txt, .json, .jsonl, .tsv, .csv"),
        ("p.json", '{"a": "not a list"}', {}, r"\['a'\] is a str; valid: a list of prompts"),
        ("p.json", "[1, 2]", {}, "prompt 0 is 1, not text"),
        ("p.json", "[not json", {}, "is not valid json"),
        ("p.csv", "id,text_en\n1,a\n", {}, "no prompt field in id, text_en; set prompts.column"),
        ("p.txt", "a\nb\n", {"category": "x"}, "prompts.category='x', but .* has no categories"),
        ("p.txt", "a\nb\n", {"column": "prompt"}, "prompts.column='prompt', but .* holds plain strings"),
        ("p.txt", "# only a comment\n", {}, "holds no prompts"),
        ("p.txt", "a\n", {"limit": 0}, "prompts.limit=0 must be an integer >= 1"),
        ("p.json", '["a", "b\\u0000c"]', {}, "prompt 1 holds a NUL character"),
    ],
)
def test_bad_prompt_files_are_one_line_errors(tmp_path, name, data, kwargs, message):
    with pytest.raises(SrsoupError, match=message) as e:
        load_prompts(None, write(tmp_path, name, data), **kwargs)
    assert "\n" not in str(e.value)


def test_texts_and_missing_file():
    assert load_prompts(["a", "b"], None, limit=1) == ["a"]
    with pytest.raises(SrsoupError, match="prompts.path='missing.txt' does not exist"):
        load_prompts(None, "missing.txt")
    with pytest.raises(SrsoupError, match="prompts.category needs a prompt file"):
        load_prompts(["a"], None, category="x")


def test_shards_are_interleaved_slices_with_global_indices():
    assert [shard_indices(10, i, 4) for i in range(4)] == [[0, 4, 8], [1, 5, 9], [2, 6], [3, 7]]
    assert shard_indices(3, 0, 1) == [0, 1, 2]
    with pytest.raises(
        SrsoupError, match="prompts.shard=4 is out of range for prompts.num_shards=4; valid: 0 to 3"
    ):
        shard_indices(10, 4, 4)
    with pytest.raises(SrsoupError, match="prompts.num_shards=0 must be an integer >= 1"):
        shard_indices(10, 0, 0)
    with pytest.raises(SrsoupError, match="holds no prompts: there are 3; use at most prompts.num_shards=3"):
        shard_indices(3, 3, 8)


def test_prompt_file_through_the_config(toy_cfg, tmp_path):
    from srsoup.spec import build_spec

    path = write(
        tmp_path, "drawbench.csv", "Prompts,Category\na red circle,Colors\na blue square,Colors\nx,Text\n"
    )
    spec = build_spec(toy_cfg("prompts=file", f"prompts.path={path}", "prompts.category=Colors"))
    assert spec.prompts == ["a red circle", "a blue square"] and spec.prompt_indices == [0, 1]
    spec = build_spec(toy_cfg("prompts=file", f"prompts.path={path}", "prompts.num_shards=2", "prompts.shard=1"))
    assert spec.prompts == ["a red circle", "a blue square", "x"] and spec.prompt_indices == [1]
    assert spec.groups == [(1, 0)]


def test_two_shards_merged_equal_the_unsharded_run(toy_cfg, tmp_path, one_torch_thread):
    from srsoup import runner
    from srsoup.report.build import build_report

    texts = ["a red circle on a blue background", "a big white square on a black background", "a small green sky"]
    prompts = f"prompts.texts=[{','.join(texts)}]"
    base = (prompts, "sampler.steps=2", "guidance.num_candidates=2", "seeds=[0,1]")
    runner.run(toy_cfg(*base), tmp_path / "full")
    for shard in (0, 1):
        runner.run(
            toy_cfg(*base, "prompts.num_shards=2", f"prompts.shard={shard}"), tmp_path / "sweep" / str(shard)
        )
    shard1 = pd.read_csv(tmp_path / "sweep" / "1" / "rewards.csv")
    assert set(shard1["prompt_idx"]) == {1} and set(shard1["image"].str[:12]) == {"images/p001_"}
    assert json.loads((tmp_path / "sweep" / "1" / "summary.json").read_text())["shard"] == {
        "shard": 1,
        "num_shards": 2,
        "prompts": 1,
    }
    full = build_report([tmp_path / "full"])
    merged = build_report([tmp_path / "sweep"])
    assert [s.name for s in merged.series] == ["0+1"] and merged.hv_table["note"][0] == "2 of 2 shards merged"
    a = pd.read_csv(tmp_path / "full" / "report" / "per_weight.csv").drop(columns=["run", "label"])
    b = pd.read_csv(tmp_path / "sweep" / "report" / "per_weight.csv").drop(columns=["run", "label"])
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert a["n"].tolist() == [6] * len(a)  # 3 prompts x 2 seeds per weight
    assert merged.hv_table["hypervolume"][0] == full.hv_table["hypervolume"][0]
