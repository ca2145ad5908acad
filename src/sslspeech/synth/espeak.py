"""libespeak-ng (from the `espeakng-loader` wheel) through ctypes: audio plus phoneme events.

espeak-ng keeps global state, so one process has one engine; `Engine()` initializes it once
(synchronous mode, phoneme events on) and `Engine.speak` returns the int16 samples at
`Engine.sample_rate` (22050 Hz) with the phonemes and the sample where each starts.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from sslspeech.errors import ConfigError, SSLSpeechError

AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_PHONEME_EVENTS = 0x0001
EVENT_LIST_TERMINATED = 0
EVENT_PHONEME = 7
CHARS_UTF8 = 1
PARAM_RATE = 1
PARAM_VOLUME = 2
PARAM_PITCH = 3
PARAM_RANGE = 4


class _Event(ctypes.Structure):
    """espeak_EVENT (speak_lib.h); `id` is a union whose phoneme member is char[8]."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),
    ]


_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


@dataclass(frozen=True)
class Utterance:
    """Synthesized speech: int16 samples and (start sample, espeak phoneme mnemonic) events."""

    samples: np.ndarray
    sample_rate: int
    phonemes: list[tuple[int, str]]


class Engine:
    """The process's espeak-ng engine. Not thread-safe across engines: one lock guards it."""

    _lock = threading.Lock()
    _instance: Engine | None = None

    def __new__(cls) -> Engine:
        with cls._lock:
            if cls._instance is None:
                instance = super().__new__(cls)
                instance._start()
                cls._instance = instance
            return cls._instance

    def _start(self) -> None:
        try:
            import espeakng_loader
        except ImportError:
            raise SSLSpeechError(
                "the synthetic corpus needs espeak-ng: pip install 'sslspeech[synth]'"
            ) from None
        self._lib = ctypes.cdll.LoadLibrary(espeakng_loader.get_library_path())
        self._lib.espeak_Initialize.restype = ctypes.c_int
        self._lib.espeak_Initialize.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_int,
        ]
        self._lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self._lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        data = espeakng_loader.get_data_path().encode()
        rate = self._lib.espeak_Initialize(
            AUDIO_OUTPUT_SYNCHRONOUS, 0, data, INITIALIZE_PHONEME_EVENTS
        )
        if rate <= 0:
            raise SSLSpeechError(f"espeak_Initialize failed (returned {rate}); data at {data!r}")
        self.sample_rate = int(rate)
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, str]] = []
        self._callback = _CALLBACK(self._collect)  # kept alive as long as the engine
        self._lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav: Any, count: int, events: Any) -> int:
        if count > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        i = 0
        while events[i].type != EVENT_LIST_TERMINATED:
            if events[i].type == EVENT_PHONEME:
                name = events[i].id.decode("utf-8", errors="replace")
                self._events.append((int(events[i].sample), name))
            i += 1
        return 0

    def speak(
        self,
        text: str,
        voice: str,
        rate: int = 175,
        pitch: int = 50,
        seed: int = 0,
        pitch_range: int = 50,
    ) -> Utterance:
        """Synthesize `text` with espeak voice `voice` (e.g. "en-us+m3"): `rate` in words/min,
        `pitch` and `pitch_range` (intonation) 0-100; `seed` seeds espeak's random generator
        (voices with flutter/roughness use it)."""
        with self._lock:
            self._lib.espeak_ng_SetRandSeed(int(seed))
            if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise ConfigError(f"espeak-ng has no voice {voice!r}")
            self._lib.espeak_SetParameter(PARAM_RATE, int(rate), 0)
            self._lib.espeak_SetParameter(PARAM_PITCH, int(pitch), 0)
            self._lib.espeak_SetParameter(PARAM_RANGE, int(pitch_range), 0)
            self._chunks, self._events = [], []
            data = text.encode("utf-8") + b"\0"
            error = self._lib.espeak_Synth(data, len(data), 0, 0, 0, CHARS_UTF8, None, None)
            if error != 0:
                raise SSLSpeechError(f"espeak_Synth failed with code {error} on {text!r}")
            samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
            events, self._chunks, self._events = self._events, [], []
        return Utterance(samples.astype(np.int16), self.sample_rate, events)
