"""Spoken replies: `OmniSiftOmniForConditionalGeneration` (thinker + talker + token2wav) against the stock
Qwen2.5-Omni full model, the talker on the kept positions against a full-length talker with the dropped positions
masked out, batches against single samples, loading and saving, and the stock behaviours this class works around."""

import hashlib
import inspect
import logging
import os
import subprocess
import sys
import textwrap
import threading

import pytest
import torch
import transformers
from helpers import BLOCK_OMNISIFT_HF, build_inputs, perturb, select_sample
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMultimodalLM,
    AutoModelForTextToWaveform,
    Qwen2_5OmniConfig,
    Qwen2_5OmniForConditionalGeneration,
)
from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import Qwen2_5OmniTalkerForConditionalGeneration

from omnisift_hf import (
    OmniSiftConfig,
    OmniSiftForConditionalGeneration,
    OmniSiftOmniConfig,
    OmniSiftOmniForConditionalGeneration,
    OmniSiftOmniGenerateOutput,
)
from omnisift_hf.models.qwen2_5_omni import OmniSiftTalkerForConditionalGeneration
from omnisift_hf.testing_utils import TINY_TTS_TEXT_IDS, tiny_omni_model, tiny_speakers

AUDIO = [("text", 3), ("audio", 200), ("text", 4)]
SHORT_AUDIO = [("text", 7), ("audio", 120), ("text", 2)]
VIDEO = [("text", 3), ("video", 4, 4, 4, 400), ("text", 4)]
SHORT_VIDEO = [("text", 5), ("video", 2, 4, 4, 200), ("text", 2)]
SPEECH = {"thinker_max_new_tokens": 6, "talker_max_new_tokens": 24, "talker_do_sample": False}

# sha256 of the stock full model's `generate` and the stock talker's `forward` (transformers 5.24.0), whose stages
# `OmniSiftOmniForConditionalGeneration.generate` and `OmniSiftTalkerForConditionalGeneration.forward` follow.
GENERATE_SOURCE_SHA256 = "58f14bcc45e763bc4912e141c67eb3c1587cf485ebaa5fc7a0cf21ecc6b4a644"
TALKER_FORWARD_SOURCE_SHA256 = "a2a5cdd857c15bfd08a2dfb0f7a011c6f086a599717ae8950eafbf091bc41f96"


@pytest.fixture(scope="module")
def omni():
    model = tiny_omni_model()
    perturb(model.thinker.compressor, seed=1)
    return model


@pytest.fixture(scope="module")
def stock(omni):
    """The stock full Qwen2.5-Omni with the same weights and speakers."""
    return stock_twin(omni)


def stock_twin(model: OmniSiftOmniForConditionalGeneration) -> Qwen2_5OmniForConditionalGeneration:
    config = model.config.to_dict()
    config["thinker_config"]["model_type"] = "qwen2_5_omni_thinker"
    twin = Qwen2_5OmniForConditionalGeneration(
        Qwen2_5OmniConfig(**{key: config[key] for key in ("thinker_config", "talker_config", "token2wav_config")})
    ).eval()
    state = {key: value for key, value in model.state_dict().items() if ".compressor." not in key}
    twin.load_state_dict(state, strict=True)
    twin.speaker_map = model.speaker_map
    twin.thinker.generation_config = model.thinker.generation_config
    return twin


def speak(model, inputs, seed=3, **kwargs):
    """A greedy spoken reply with token2wav's noise seeded, and the codec codes token2wav received."""
    codes = []
    hook = model.token2wav.register_forward_pre_hook(lambda module, args: codes.append(args[0].clone()))
    try:
        torch.manual_seed(seed)
        sequences, audio = model.generate(**inputs, **{**SPEECH, **kwargs})
    finally:
        hook.remove()
    return sequences, (audio if isinstance(audio, list) else [audio]), codes


def capture_talker_prefill(model):
    """A forward pre-hook recording the talker's first call (its prefill) of each `generate`."""
    calls = []

    def record(module, args, kwargs):
        if kwargs.get("inputs_embeds") is not None:
            calls.append({key: value.clone() if torch.is_tensor(value) else value for key, value in kwargs.items()})

    return calls, model.talker.register_forward_pre_hook(record, with_kwargs=True)


# ---------------------------------------------------------------------------------------------------------------------
# keep_ratio=1.0 is the stock model
# ---------------------------------------------------------------------------------------------------------------------
def test_identity_with_stock_padded_batch(omni, stock):
    """Left-padded batch, audio input: same text ids, codec codes and waveforms as the stock full model."""
    inputs = build_inputs([AUDIO, SHORT_AUDIO])
    assert not bool(inputs["attention_mask"].all())
    ours = speak(omni, inputs, keep_ratio=1.0)
    theirs = speak(stock, inputs)
    assert torch.equal(ours[0], theirs[0])
    assert len(ours[2]) == len(theirs[2]) == 2
    for a, b in zip(ours[2], theirs[2], strict=True):
        assert torch.equal(a, b)
    for a, b in zip(ours[1], theirs[1], strict=True):
        assert torch.equal(a, b)


def test_identity_with_stock_video_batch(omni, stock):
    """Videos with their audio: stock needs `talker_pixel_values_videos=None` (see the test below); then the same."""
    inputs = build_inputs([VIDEO, SHORT_VIDEO])
    ours = speak(omni, inputs, keep_ratio=1.0)
    theirs = speak(stock, inputs, talker_pixel_values_videos=None)
    assert torch.equal(ours[0], theirs[0])
    for a, b in zip(ours[2] + ours[1], theirs[2] + theirs[1], strict=True):
        assert torch.equal(a, b)


def test_stock_refuses_video_input_with_audio_output(stock, omni):
    """transformers 5.24 hands `pixel_values_videos` to `talker.generate`, which refuses it. When this test fails,
    transformers has fixed it and the workaround in the identity test above can go."""
    inputs = build_inputs([VIDEO])
    with pytest.raises(ValueError, match="pixel_values_videos"):
        stock.generate(**inputs, **SPEECH)
    sequences, audio, _ = speak(omni, inputs, keep_ratio=0.25)
    assert sequences.shape[0] == 1 and audio[0].ndim == 1 and audio[0].numel() > 0


def test_stock_talker_skips_positions_without_padding(stock, omni):
    """transformers 5.24's `generate` drops an all-ones attention mask, and the stock talker computes its M-RoPE
    positions and adds the codec pad/bos embeddings only when it gets a mask: an unpadded prompt speaks differently
    from the same prompt as a row of a padded batch. Ours speaks the same either way (what the padded path, and
    Qwen2.5-Omni's original code, do). When this test fails, transformers has fixed it."""
    samples = [AUDIO, SHORT_AUDIO]
    batch = build_inputs(samples)
    single = select_sample(batch, samples, 1)
    calls, hook = capture_talker_prefill(stock)
    try:
        speak(stock, single)
    finally:
        hook.remove()
    assert calls[0].get("attention_mask") is None  # so the stock talker's positions are 0, 1, 2, ...

    ours_batch, ours_single = speak(omni, batch, keep_ratio=1.0), speak(omni, single, keep_ratio=1.0)
    assert torch.equal(ours_batch[2][1], ours_single[2][0])
    stock_batch = speak(stock, batch)
    assert torch.equal(stock_batch[2][1], ours_single[2][0])  # the stock padded row is what we give unpadded


def test_copied_stages_have_not_changed_upstream():
    sources = {
        "Qwen2_5OmniForConditionalGeneration.generate": (
            inspect.getsource(Qwen2_5OmniForConditionalGeneration.generate),
            GENERATE_SOURCE_SHA256,
        ),
        "Qwen2_5OmniTalkerForConditionalGeneration.forward": (
            inspect.getsource(Qwen2_5OmniTalkerForConditionalGeneration.forward),
            TALKER_FORWARD_SOURCE_SHA256,
        ),
    }
    for name, (source, expected) in sources.items():
        assert hashlib.sha256(source.encode()).hexdigest() == expected, (
            f"transformers changed {name}: compare it with OmniSiftOmniForConditionalGeneration.generate / "
            "OmniSiftTalkerForConditionalGeneration.forward, update them, then the pinned sha256."
        )


# ---------------------------------------------------------------------------------------------------------------------
# keep_ratio < 1: the talker on the kept positions
# ---------------------------------------------------------------------------------------------------------------------
def test_talker_prefill_is_the_kept_positions(omni):
    inputs = build_inputs([VIDEO, SHORT_VIDEO])
    torch.manual_seed(0)
    out = omni.generate(**inputs, **SPEECH, keep_ratio=0.25, return_dict_in_generate=True)
    assert isinstance(out, OmniSiftOmniGenerateOutput)
    kept = out.kept_token_index.shape[1]
    length = inputs["input_ids"].shape[1]
    assert out.talker_prompt_length == kept + 2 < length + 2
    kept_media = out.num_kept_video_tokens + out.num_kept_audio_tokens
    assert torch.all(kept_media < out.num_video_tokens + out.num_audio_tokens)
    assert len(out.audio) == len(out.audio_codes) == 2
    assert all(wave.dtype == torch.float32 and wave.ndim == 1 for wave in out.audio)
    # The thinker was asked for the two hidden-state layers the talker reads, not all of them.
    stats = omni.compression_stats
    assert torch.equal(stats.num_kept_audio_tokens, out.num_kept_audio_tokens)


def test_thinker_returns_only_the_layers_the_talker_reads(omni):
    requested = []
    hook = omni.thinker.register_forward_pre_hook(
        lambda module, args, kwargs: requested.append(kwargs.get("output_hidden_states")), with_kwargs=True
    )
    try:
        speak(omni, build_inputs([VIDEO]), keep_ratio=0.25)
    finally:
        hook.remove()
    assert requested and all(value == [0, -1] for value in requested)


def test_kept_position_talker_equals_masked_full_length_talker(omni):
    """float64: the talker's first codec logits from the K + 2 kept positions equal those of a talker prompted with
    all L + 2 positions (stock's positions from `get_rope_index`), the dropped ones masked out."""
    model = tiny_omni_model().double()
    inputs = build_inputs([VIDEO, SHORT_VIDEO])
    inputs = {key: v.double() if torch.is_tensor(v) and v.is_floating_point() else v for key, v in inputs.items()}
    calls, hook = capture_talker_prefill(model)
    outputs = []
    logits_hook = model.talker.register_forward_hook(lambda module, args, output: outputs.append(output.logits))
    try:
        torch.manual_seed(0)
        out = model.generate(**inputs, **SPEECH, keep_ratio=0.25, return_dict_in_generate=True)
    finally:
        hook.remove()
        logits_hook.remove()
    prefill, kept_logits = calls[0], outputs[0][:, -1]
    batch, length = inputs["input_ids"].shape
    kept = out.kept_token_index.shape[1]
    kept_mask = prefill["attention_mask"][:, :kept]

    # Scatter the kept rows into a full-length prompt; dropped positions get noise and are masked out.
    index = torch.cat([out.kept_token_index, torch.tensor([[length, length + 1]]).expand(batch, -1)], dim=1)
    real = torch.cat([kept_mask, kept_mask.new_ones(batch, 2)], dim=1).bool()
    embeds = torch.randn(batch, length + 2, prefill["inputs_embeds"].shape[-1], dtype=torch.float64)
    mask = torch.zeros(batch, length + 2, dtype=torch.long)
    for row in range(batch):
        embeds[row, index[row][real[row]]] = prefill["inputs_embeds"][row][real[row]]
        mask[row, index[row][real[row]]] = 1
    text_bos = torch.full((batch, 1), TINY_TTS_TEXT_IDS["speaker_bos"])
    full_positions, _ = model.talker.get_rope_index(
        torch.cat([inputs["input_ids"], text_bos, out.sequences[:, length : length + 1]], dim=1),
        None,
        inputs["video_grid_thw"],
        torch.cat([inputs["attention_mask"], inputs["attention_mask"].new_ones(batch, 2)], dim=1),
        True,
        inputs["feature_attention_mask"].sum(1),
        inputs.get("video_second_per_grid"),
    )
    with torch.no_grad():
        reference = model.talker(
            input_ids=None,
            inputs_embeds=embeds,
            attention_mask=mask,
            prompt_position_ids=full_positions,
            thinker_reply_part=prefill["thinker_reply_part"],
            use_cache=False,
        ).logits[:, -1]
    assert kept < length
    torch.testing.assert_close(kept_logits, reference, rtol=0, atol=1e-10)


def test_batch_equals_per_sample(omni):
    """Left-padded batch at keep 0.25: each sample's text ids and codec codes equal its run alone."""
    samples = [VIDEO, SHORT_VIDEO]
    batch = build_inputs(samples)
    sequences, _, codes = speak(omni, batch, keep_ratio=0.25)
    for row in range(2):
        single = select_sample(batch, samples, row)
        single_sequences, _, single_codes = speak(omni, single, keep_ratio=0.25)
        real = batch["attention_mask"][row].bool()
        prompt = batch["input_ids"].shape[1]
        assert torch.equal(sequences[row, :prompt][real], single_sequences[0, : int(real.sum())])
        reply, single_reply = sequences[row, prompt:], single_sequences[0, int(real.sum()) :]
        assert torch.equal(reply[: single_reply.shape[0]], single_reply)
        assert torch.equal(codes[row], single_codes[0])


# ---------------------------------------------------------------------------------------------------------------------
# Modes, talker switch, errors
# ---------------------------------------------------------------------------------------------------------------------
def test_text_mode_is_the_thinker(omni):
    inputs = build_inputs([VIDEO])
    text = omni.generate(**inputs, generation_mode="text", thinker_max_new_tokens=5, keep_ratio=0.25)
    thinker = omni.thinker.generate(**inputs, max_new_tokens=5, keep_ratio=0.25)
    assert torch.equal(text, thinker)


def test_talker_switch_behaves_as_stock():
    model = tiny_omni_model()
    assert model.has_talker and isinstance(model.talker, OmniSiftTalkerForConditionalGeneration)
    model.disable_talker()
    assert not model.has_talker and not hasattr(model, "talker") and not hasattr(model, "token2wav")
    inputs = build_inputs([AUDIO])
    text = model.generate(**inputs, thinker_max_new_tokens=3)  # default mode follows the talker: text
    assert torch.is_tensor(text) and text.shape[0] == 1
    with pytest.raises(ValueError, match="enable_talker"):
        model.generate(**inputs, generation_mode="audio", thinker_max_new_tokens=3)
    model.enable_talker()
    assert model.has_talker and isinstance(model.talker, OmniSiftTalkerForConditionalGeneration)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"speaker": "Nobody"}, ("speaker='Nobody'", "Chelsie", "Ethan")),
        ({"generation_mode": "speech"}, ("generation_mode", "'audio'", "'text'")),
        ({"keep_ratio": 0.0}, ("keep_ratio",)),
        ({"keep_ratio": 1.5}, ("keep_ratio",)),
    ],
)
def test_bad_generate_arguments_raise_before_generating(omni, kwargs, words):
    calls = []
    hook = omni.thinker.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        with pytest.raises(ValueError) as raised:
            omni.generate(**build_inputs([VIDEO]), **SPEECH, **kwargs)
    finally:
        hook.remove()
    assert calls == []
    for word in words:
        assert word in str(raised.value)


def test_no_speakers_raises_when_asked_to_speak():
    model = tiny_omni_model()
    model.speaker_map = {}
    with pytest.raises(ValueError, match="spk_dict.pt"):
        model.generate(**build_inputs([AUDIO]), **SPEECH)
    text = model.generate(**build_inputs([AUDIO]), generation_mode="text", thinker_max_new_tokens=3)
    assert text.shape[0] == 1


# ---------------------------------------------------------------------------------------------------------------------
# Loading and saving
# ---------------------------------------------------------------------------------------------------------------------
def assert_state_dicts_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_auto_classes_and_config(omni, tmp_path):
    omni.save_pretrained(tmp_path)
    assert (tmp_path / "spk_dict.pt").is_file()
    assert type(AutoConfig.from_pretrained(tmp_path)) is OmniSiftOmniConfig
    for auto_class in (AutoModel, AutoModelForMultimodalLM, AutoModelForTextToWaveform):
        loaded = auto_class.from_pretrained(tmp_path)
        assert type(loaded) is OmniSiftOmniForConditionalGeneration
        assert type(loaded.thinker) is OmniSiftForConditionalGeneration
        assert type(loaded.config.thinker_config) is OmniSiftConfig
    assert_state_dicts_equal(loaded.state_dict(), omni.state_dict())
    assert loaded.speaker_map.keys() == omni.speaker_map.keys()
    for name, speaker in omni.speaker_map.items():
        assert torch.equal(loaded.speaker_map[name]["cond"], speaker["cond"])
        assert loaded.speaker_map[name]["bos_token"] == speaker["bos_token"]


def test_loads_stock_checkpoint_bit_exactly(omni, stock, tmp_path, caplog):
    stock.save_pretrained(tmp_path)
    torch.save(tiny_speakers(), tmp_path / "spk_dict.pt")
    config = AutoConfig.from_pretrained(tmp_path)
    assert type(config) is Qwen2_5OmniConfig  # the stock directory stays stock for Auto classes
    assert type(OmniSiftOmniConfig.from_pretrained(tmp_path).thinker_config) is OmniSiftConfig
    with caplog.at_level(logging.WARNING):
        loaded = OmniSiftOmniForConditionalGeneration.from_pretrained(tmp_path)
    untrained = [r for r in caplog.records if "untrained" in r.getMessage()]
    assert len(untrained) == 1
    stock_state = stock.state_dict()
    loaded_state = {k: v for k, v in loaded.state_dict().items() if ".compressor." not in k}
    assert_state_dicts_equal(loaded_state, stock_state)
    inputs = build_inputs([AUDIO, SHORT_AUDIO])
    ours, theirs = speak(loaded, inputs, keep_ratio=1.0), speak(stock, inputs)
    assert torch.equal(ours[0], theirs[0])
    assert all(torch.equal(a, b) for a, b in zip(ours[2], theirs[2], strict=True))


def test_checkpoint_without_speakers_loads_and_says_so(omni, tmp_path, caplog):
    omni.save_pretrained(tmp_path)
    os.remove(tmp_path / "spk_dict.pt")
    with caplog.at_level(logging.WARNING):
        loaded = OmniSiftOmniForConditionalGeneration.from_pretrained(tmp_path)
    assert any("spk_dict.pt" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match="load_speakers"):
        loaded.generate(**build_inputs([AUDIO]), **SPEECH)


REMOTE_SPEAK_SCRIPT = BLOCK_OMNISIFT_HF + textwrap.dedent(
    """
    import torch
    import transformers

    directory, inputs_path, output_path = sys.argv[1:]
    inputs = torch.load(inputs_path)
    model = transformers.AutoModelForTextToWaveform.from_pretrained(directory, trust_remote_code=True).eval()
    torch.manual_seed(3)
    sequences, audio = model.generate(
        **inputs, keep_ratio=0.25, thinker_max_new_tokens=6, talker_max_new_tokens=24, talker_do_sample=False
    )
    torch.save({"module": type(model).__module__, "sequences": sequences, "audio": audio}, output_path)
    """
)


@pytest.mark.slow
def test_trust_remote_code_without_omnisift_hf(omni, tmp_path):
    omni.save_pretrained(tmp_path / "saved")
    inputs = build_inputs([VIDEO])
    torch.save(inputs, tmp_path / "inputs.pt")
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    command = [sys.executable, "-c", REMOTE_SPEAK_SCRIPT, str(tmp_path / "saved"), str(tmp_path / "inputs.pt")]
    completed = subprocess.run(
        [*command, str(tmp_path / "out.pt")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = torch.load(tmp_path / "out.pt")
    assert result["module"].startswith("transformers_modules.")
    sequences, audio, _ = speak(omni, inputs, keep_ratio=0.25)
    assert torch.equal(result["sequences"], sequences)
    assert torch.equal(result["audio"], audio[0])


def test_registered_with_transformers():
    assert transformers.AutoModelForTextToWaveform._model_mapping[OmniSiftOmniConfig] is (
        OmniSiftOmniForConditionalGeneration
    )


def test_threads_sharing_the_model_speak_as_alone(omni):
    """The talker's decode positions come from each call's own prompt positions, not from state on the module: two
    threads speaking at once on one model get the text and codes each gets alone (keep 0.25, different lengths)."""
    prompts = [build_inputs([VIDEO]), build_inputs([SHORT_VIDEO])]

    def reply(index):
        out = omni.generate(**prompts[index], **SPEECH, keep_ratio=0.25, return_dict_in_generate=True)
        return out.sequences, out.audio_codes[0], out.num_kept_audio_tokens

    alone = [reply(index) for index in range(2)]
    results, barrier = {}, threading.Barrier(2)

    def run(index):
        barrier.wait()
        results[index] = reply(index)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert alone[0][0].shape[1] != alone[1][0].shape[1]
    for index in range(2):
        for got, expected in zip(results[index], alone[index], strict=True):
            assert torch.equal(got, expected)


def test_talker_decode_step_takes_the_cache_under_either_name(omni):
    """As the stock talker, `past_key_values=` is the deprecated spelling of `cache=`: a decode step continues the
    prompt's positions whichever name the cache comes under."""
    calls, hook = capture_talker_prefill(omni)
    try:
        speak(omni, build_inputs([VIDEO, SHORT_VIDEO]), keep_ratio=0.25)  # padded: the mask is kept
    finally:
        hook.remove()
    prefill = calls[0]
    talker = omni.talker
    prompt = {key: value for key, value in prefill.items() if key in TALKER_PREFILL_KEYS}
    with torch.no_grad():
        first, again = talker(**prompt, use_cache=True), talker(**prompt, use_cache=True)
        step = {
            "input_ids": torch.full((2, 1), talker.codec_bos_token),
            "attention_mask": torch.cat([prefill["attention_mask"], torch.ones(2, 1, dtype=torch.long)], dim=1),
            "prompt_position_ids": prefill["prompt_position_ids"],
            "thinker_reply_part": first.thinker_reply_part,
        }
        by_name = talker(**step, cache=first.cache).logits
        by_old_name = talker(**step, past_key_values=again.cache).logits
    torch.testing.assert_close(by_old_name, by_name, rtol=0, atol=0)


TALKER_PREFILL_KEYS = ("input_ids", "inputs_embeds", "attention_mask", "prompt_position_ids", "thinker_reply_part")
