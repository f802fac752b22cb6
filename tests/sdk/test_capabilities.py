"""The official OpenAI SDK, unmodified, against aigw for embeddings, image generation, audio
transcription (a WAV the test writes) and the videos create/retrieve/content cycle."""

import io
import wave

import openai
import pytest
from openai import OpenAI

from conftest import KEY


@pytest.fixture
def client(gateway):
    return OpenAI(base_url=gateway, api_key=KEY, max_retries=0)


def make_wav(seconds=2, rate=16000):
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x00" * rate * seconds)
    return buf.getvalue()


def test_embeddings(client):
    result = client.embeddings.create(model="text-embedding-3-small", input=["hello", "world"])
    assert len(result.data) == 2
    assert len(result.data[0].embedding) > 0
    assert result.usage.prompt_tokens > 0


def test_image_generation(client):
    result = client.images.generate(model="gpt-image-1", prompt="a red square", n=2, size="1024x1024")
    assert len(result.data) == 2
    b64 = client.images.generate(
        model="gpt-image-1", prompt="a red square", response_format="b64_json")
    assert b64.data[0].b64_json


def test_audio_transcription_in_every_format(client):
    audio = make_wav(seconds=2)
    result = client.audio.transcriptions.create(
        model="whisper-1", file=("speech.wav", audio, "audio/wav"))
    assert "by mock-whisper" in result.text
    verbose = client.audio.transcriptions.create(
        model="whisper-1", file=("speech.wav", audio, "audio/wav"), response_format="verbose_json")
    assert verbose.duration == pytest.approx(2.0)
    for fmt, marker in [("text", "mock transcript"), ("srt", "00:00:02,000"), ("vtt", "WEBVTT")]:
        text = client.audio.transcriptions.create(
            model="whisper-1", file=("speech.wav", audio, "audio/wav"), response_format=fmt)
        assert marker in text, fmt


def test_transcription_of_an_unknown_model_is_a_404(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.audio.transcriptions.create(model="nope", file=("a.wav", make_wav(1), "audio/wav"))
    assert err.value.body["code"] == "model_not_found"


@pytest.mark.filterwarnings("ignore:The Sora API:DeprecationWarning")
def test_videos_create_retrieve_content_list_delete(client):
    video = client.videos.create(model="sora-2", prompt="waves on a beach", seconds="4")
    assert video.status == "queued"
    for _ in range(5):
        video = client.videos.retrieve(video.id)
        if video.status == "completed":
            break
    assert video.status == "completed"
    content = client.videos.download_content(video.id)
    assert content.read().startswith(b"MOCK-MP4")
    assert any(v.id == video.id for v in client.videos.list())
    deleted = client.videos.delete(video.id)
    assert deleted.deleted
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(video.id[:-1] + ("0" if video.id[-1] != "0" else "1"))
