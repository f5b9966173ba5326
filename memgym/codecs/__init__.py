"""Codecs turn LLM text into typed memory ops and ops back into text."""

from memgym.codecs.base import Codec, CutAction, ParseError, ParseResult, strict_result
from memgym.codecs.importance import ImportanceCodec
from memgym.codecs.mem0_json import Mem0JsonCodec
from memgym.codecs.mem_alpha import MemAlphaCodec
from memgym.codecs.ranking import RankingCodec
from memgym.codecs.xml_tags import XmlTagsCodec

__all__ = ["Codec", "CutAction", "ImportanceCodec", "Mem0JsonCodec", "MemAlphaCodec", "ParseError",
           "ParseResult", "RankingCodec", "XmlTagsCodec", "strict_result"]
