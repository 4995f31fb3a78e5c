"""Base class for the immutable values that flow between stages.

Owns only the model configuration; must not import any other envbuilder module.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Value(BaseModel):
    """A frozen, strict-keyed pydantic model: stages hand these to each other and never edit them."""

    model_config = ConfigDict(frozen=True, extra="forbid")
