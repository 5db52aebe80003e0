"""Pick the compiled hot path or its pure-Python twin, once, at import.

``FASTGW_NO_EXTENSIONS=1`` forces the twin; ``FASTGW_EXTENSION=1`` turns a missing or broken
extension into an ImportError instead of a silent fallback (CI uses it so a failed build cannot
hide behind the twin).
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

NO_EXTENSIONS = bool(os.environ.get("FASTGW_NO_EXTENSIONS")) or sys.implementation.name != "cpython"

if TYPE_CHECKING or NO_EXTENSIONS:
    from ._speedups_py import (
        LAST_CHUNK,
        BucketTable,
        ChunkedDecoder,
        HttpParseError,
        RequestHead,
        ResponseHead,
        RouteTrie,
        encode_chunk,
        parse_request_head,
        parse_response_head,
        sign_v2,
        webhook_signature,
    )

    IMPLEMENTATION = "py"
else:
    try:
        from ._speedups import (
            LAST_CHUNK,
            BucketTable,
            ChunkedDecoder,
            HttpParseError,
            RequestHead,
            ResponseHead,
            RouteTrie,
            encode_chunk,
            parse_request_head,
            parse_response_head,
            sign_v2,
            webhook_signature,
        )

        IMPLEMENTATION = "c"
    except ImportError:
        if os.environ.get("FASTGW_EXTENSION") == "1":
            raise
        from ._speedups_py import (
            LAST_CHUNK,
            BucketTable,
            ChunkedDecoder,
            HttpParseError,
            RequestHead,
            ResponseHead,
            RouteTrie,
            encode_chunk,
            parse_request_head,
            parse_response_head,
            sign_v2,
            webhook_signature,
        )

        IMPLEMENTATION = "py"

__all__ = [
    "IMPLEMENTATION",
    "LAST_CHUNK",
    "BucketTable",
    "ChunkedDecoder",
    "HttpParseError",
    "RequestHead",
    "ResponseHead",
    "RouteTrie",
    "encode_chunk",
    "parse_request_head",
    "parse_response_head",
    "sign_v2",
    "webhook_signature",
]
