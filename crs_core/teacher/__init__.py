"""Teachers that rate (dialogue context, candidate item) pairs 0..4: an LLM over an OpenAI-compatible API
(live, or through the Batch API), judgments an LLM recorded earlier, or the offline knowledge-graph rubric.
All return `Label`s that become rows of teacher.parquet."""

from __future__ import annotations

from crs_core.teacher.batch import (
    BATCH_PRICE_FACTOR,
    BatchTeacher,
    batch_request,
    parse_custom_id,
    read_batch_output,
)
from crs_core.teacher.cache import TeacherCache, cache_key
from crs_core.teacher.client import Label, LLMTeacher, Pair, cost_usd, resolve_api_key
from crs_core.teacher.kg_teacher import (
    KG_RUBRIC_VERSION,
    KG_TEACHER_MODEL,
    KGCalibration,
    KGTeacher,
    fit_calibration,
    kg_score,
)
from crs_core.teacher.prompt import (
    PROMPT_VERSION,
    PromptTemplate,
    ScoreParseError,
    load_prompt,
    parse_score,
)
from crs_core.teacher.recorded import RecordedJudgments, load_recorded, resolve_files

__all__ = [
    "BATCH_PRICE_FACTOR",
    "BatchTeacher",
    "KG_RUBRIC_VERSION",
    "KG_TEACHER_MODEL",
    "KGCalibration",
    "KGTeacher",
    "LLMTeacher",
    "Label",
    "PROMPT_VERSION",
    "Pair",
    "PromptTemplate",
    "RecordedJudgments",
    "ScoreParseError",
    "TeacherCache",
    "batch_request",
    "cache_key",
    "cost_usd",
    "fit_calibration",
    "kg_score",
    "load_prompt",
    "load_recorded",
    "parse_custom_id",
    "parse_score",
    "read_batch_output",
    "resolve_api_key",
    "resolve_files",
]
