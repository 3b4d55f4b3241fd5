"""Task records (OneThinker/EasyR1 JSON), loaders and image opening."""

from .loading import load_records, open_image, png_data_url
from .records import PROBLEM_TYPES, RecordError, TaskRecord, check_problem_type, strip_answer_tag

__all__ = ["PROBLEM_TYPES", "RecordError", "TaskRecord", "check_problem_type", "load_records", "open_image", "png_data_url",
           "strip_answer_tag"]
