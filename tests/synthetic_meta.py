"""Synthetic benchmark records in the real MMAU / MMAR / MMSU schemas, with the real quirks
(category as a list, duplicated choices, 2 to 8 choices, CJK and emoji choices, mix-* modalities,
language null). Made up here: no benchmark text is shipped with the project."""

from __future__ import annotations

import random

MMAU_SUBCATS = ["Acoustic Source Inference", "Instrument Identification", "Emotion Recognition", "Counting"]
MMAR_MODALITIES = ["sound", "music", "speech", "mix-sound-music", "mix-sound-speech", "mix-music-speech",
                   "mix-sound-music-speech"]
MMAR_CATEGORIES = ["Signal Layer", "Perception Layer", "Semantic Layer", "Cultural Layer"]

_CHOICE_POOLS = [
    ["dog barking", "cat meowing", "bird singing", "car horn"],
    ["Man", "Woman", "Child", "Robot"],
    ["yes", "no"],
    ["piano", "violin", "guitar", "drums", "flute"],
    ["一", "二", "三", "四"],
    ["😀 happy", "😢 sad", "😠 angry", "😐 neutral"],
    ["rising", "rising", "falling", "steady"],  # duplicated choice, as in 27 real MMAU items
    ["C major", "A minor", "G major", "E minor", "D major", "B minor", "F major", "D minor"],
    ["Café ambience", "Straße traffic", "naïve choir"],
]


def mmau_records(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        choices = list(rng.choice(_CHOICE_POOLS))
        rid = f"mmau-syn-{i:04d}"
        out.append({
            "id": rid,
            "audio_id": f"./test-mini-audios/{rid}.wav",
            "question": f"Synthetic question {i}: which option describes the clip?",
            "choices": choices,
            "answer": rng.choice(choices),
            "dataset": "synthetic",
            "task": ["sound", "music", "speech"][i % 3],
            "split": "test-mini",
            "category": ["Reasoning"] if i % 7 == 0 else rng.choice(["Reasoning", "Information Extraction"]),
            "sub-category": rng.choice(MMAU_SUBCATS),
            "difficulty": ["easy", "medium", "hard"][i % 3],
        })
    return out


def mmar_records(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed + 1)
    out = []
    for i in range(n):
        choices = list(rng.choice(_CHOICE_POOLS))
        rid = f"syn{i:04d}_00-00-0{i % 10}_00-00-1{i % 10}"
        out.append({
            "id": rid,
            "audio_path": f"./audio/{rid}.wav",
            "question": f"Synthetic reasoning question {i}?",
            "choices": choices,
            "answer": rng.choice(choices),
            "modality": MMAR_MODALITIES[i % len(MMAR_MODALITIES)],
            "category": MMAR_CATEGORIES[i % 4],
            "sub-category": rng.choice(["Counting", "Emotion", "Professional Knowledge and Reasoning"]),
            "language": None if i % 3 == 0 else rng.choice(["en", "zh", "zh|en"]),
            "source": "synthetic",
            "url": "https://example.invalid/clip",
            "timestamp": "00:00:00,00:00:10",
            "thinking": f"Synthetic reference reasoning for item {i}.",
            "cue": ["cue one", "cue two"],
            "rubric": [{"name": f"Criterion {k}", "scoring_point": "Award 1 point if ...", "note": "",
                        "choices": [0, 1]} for k in range(5)],
        })
    return out


def mmsu_records(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed + 2)
    cats = {"Perception": ["Phonetics", "Paralinguistics"], "Reasoning": ["Semantics", "Pragmatics"]}
    out = []
    for i in range(n):
        cat = rng.choice(list(cats))
        choices = [f"option {i} a", "option b", f"选项 {i}", "🎵 music"]
        out.append({
            "id": f"mmsu-syn-{i:04d}", "task_name": "synthetic_task", "audio": f"audio/mmsu-syn-{i:04d}.wav",
            "question": f"Synthetic spoken question {i}?",
            "choice_a": choices[0], "choice_b": choices[1], "choice_c": choices[2], "choice_d": choices[3],
            "answer_gt": rng.choice(choices), "category": cat, "sub-category": rng.choice(cats[cat]),
            "sub-sub-category": "x", "linguistics_sub_discipline": "phonology",
        })
    return out
