"""CSS inlining with premailer, once per issue and language (it costs ~30 ms per issue)."""

from __future__ import annotations

import logging

from premailer import Premailer

_quiet = logging.getLogger("newsletter.inline")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


def inline_css(html: str, base_url: str) -> str:
    """Inline the `<style>` rules into `style=` attributes and make every link absolute.

    Media queries cannot be inlined, so premailer keeps them in a `<style>` block for the clients
    that honour them (Apple Mail, Gmail apps); everything else reads the inline styles.
    """
    return Premailer(
        html,
        base_url=base_url,
        preserve_internal_links=True,
        remove_classes=False,
        strip_important=False,
        keep_style_tags=False,
        cssutils_logging_level=logging.CRITICAL,
        cssutils_logging_handler=logging.NullHandler(),
        disable_validation=True,
        cache_css_parsing=True,
        allow_network=False,
    ).transform(pretty_print=False)
