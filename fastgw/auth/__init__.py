"""Who is calling: the credential chain of SPEC section 4.

The first credential present decides; a credential that is present but invalid is a 401 and
never falls through to the next one (a stolen-but-revoked token must not be rescued by a
cookie the same client also sends). Each kind of credential has its own verifier module; this
package only orders them and turns their verdicts into a ``Principal`` or a ``LocalReply``.
"""

from __future__ import annotations

from .principal import Principal

__all__ = ["Principal"]
