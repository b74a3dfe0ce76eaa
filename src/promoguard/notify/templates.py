"""Messages from Jinja2 templates, in Chinese (``zh``) and English (``en``).

Each template is two files under ``templates/<locale>/``: ``<name>.txt`` holds three blocks,
``subject``, ``body`` (the plain-text email) and ``short`` (an SMS or a push body), and
``<name>.html`` is the HTML alternative of the email (escaped automatically). A locale promoguard
has no templates for falls back to English; a template that does not exist, or a variable a
template needs and the caller did not give, is an error naming what is missing.

Filters the templates use: ``amount|money(currency)`` renders minor units for the locale
(``¥123.45``), ``instant|when`` renders an aware datetime (or an ISO 8601 string) in the
configured time zone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

from babel.dates import format_datetime
from jinja2 import (
    Environment,
    PackageLoader,
    StrictUndefined,
    Template,
    TemplateNotFound,
    UndefinedError,
    select_autoescape,
)

from promoguard.errors import InvalidError
from promoguard.money import Money

__all__ = [
    "DEFAULT_LOCALE",
    "LOCALES",
    "Rendered",
    "TemplateContextError",
    "Templates",
    "UnknownTemplateError",
    "normalise_locale",
    "render",
]

LOCALES = ("zh", "en")
"""The locales every template exists in."""
DEFAULT_LOCALE = "en"
"""What a locale without templates falls back to."""
BABEL_LOCALES = {"zh": "zh_CN", "en": "en_US"}
DEFAULT_TIMEZONE = "Asia/Shanghai"


class UnknownTemplateError(InvalidError):
    """No template of that name."""


class TemplateContextError(InvalidError):
    """The template needs a variable the caller did not give."""


@dataclass(frozen=True, slots=True)
class Rendered:
    """One message in one locale: an email's subject, text and HTML, and a short form for SMS
    and push."""

    subject: str
    text: str
    html: str
    short: str
    locale: str


def normalise_locale(locale: str | None) -> str:
    """``zh_CN``, ``zh-Hans``, ``ZH`` -> ``zh``; ``en-GB`` -> ``en``; anything else -> ``en``."""
    language = (locale or "").replace("-", "_").split("_", 1)[0].lower()
    return language if language in LOCALES else DEFAULT_LOCALE


class Templates:
    """The bundled templates, rendered with the filters for one time zone."""

    def __init__(self, timezone: str = DEFAULT_TIMEZONE) -> None:
        # One environment per locale: the filters format money and time for that locale.
        self._envs = {language: _environment(language, timezone) for language in LOCALES}

    def names(self) -> list[str]:
        """Every template's name (those with a ``.txt`` in the default locale)."""
        prefix, suffix = f"{DEFAULT_LOCALE}/", ".txt"
        return sorted(
            name[len(prefix) : -len(suffix)]
            for name in self._envs[DEFAULT_LOCALE].list_templates(extensions=["txt"])
            if name.startswith(prefix) and not name[len(prefix) :].startswith("_")
        )

    def render(self, template: str, locale: str | None, **context: Any) -> Rendered:
        """Render ``template`` in ``locale`` (falling back to English) with ``context``.

        Args:
            template: the template's name, e.g. ``customer_incident_opened``.
            locale: ``zh`` or ``en`` (``zh_CN`` and the like are understood).
            context: the variables the template uses.

        Returns:
            The subject, plain text, HTML and short form.

        Raises:
            UnknownTemplateError: there is no template of that name.
            TemplateContextError: the template needs a variable that ``context`` lacks.
        """
        language = normalise_locale(locale)
        text, html = self._pair(template, language)
        try:
            blocks = {
                name: "".join(block(text.new_context(context))).strip()
                for name, block in text.blocks.items()
            }
            body_html = html.render(context).strip()
        except UndefinedError as exc:
            raise TemplateContextError(
                "template_context_missing",
                f"template {template!r} ({language}) needs a value the notice lacks: {exc.message}",
            ) from None
        missing = {"subject", "body", "short"} - blocks.keys()
        if missing:
            raise UnknownTemplateError(
                "template_incomplete",
                f"template {template!r} ({language}) lacks the block(s) "
                f"{', '.join(sorted(missing))}",
            )
        return Rendered(
            subject=" ".join(blocks["subject"].split()),
            text=blocks["body"] + "\n",
            html=body_html + "\n",
            short=" ".join(blocks["short"].split()),
            locale=language,
        )

    def _pair(self, template: str, language: str) -> tuple[Template, Template]:
        if not template or template.startswith("_") or "/" in template or "." in template:
            raise UnknownTemplateError(
                "unknown_template", f"{template!r} is not a notification template name"
            )
        env = self._envs[language]
        try:
            return (
                env.get_template(f"{language}/{template}.txt"),
                env.get_template(f"{language}/{template}.html"),
            )
        except TemplateNotFound as exc:
            raise UnknownTemplateError(
                "unknown_template",
                f"no notification template {template!r} in {language} (missing {exc.name}); "
                f"there are: {', '.join(self.names())}",
            ) from None


def _environment(language: str, timezone: str) -> Environment:
    babel_locale = BABEL_LOCALES[language]
    zone = ZoneInfo(timezone)

    def money(amount: int, currency: str = "CNY") -> str:
        return Money(amount, currency).display(babel_locale)

    def when(instant: datetime | str) -> str:
        if isinstance(instant, str):
            instant = datetime.fromisoformat(instant)
        if instant.tzinfo is None:
            raise ValueError("naive datetimes are not shown: give a time zone")
        return str(
            format_datetime(instant, "yyyy-MM-dd HH:mm ZZZZ", tzinfo=zone, locale=babel_locale)
        )

    env = Environment(
        loader=PackageLoader("promoguard.notify", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html",), default=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["money"] = money
    env.filters["when"] = when
    return env


@cache
def _bundled(timezone: str) -> Templates:
    return Templates(timezone)


def render(
    template: str, locale: str | None, *, timezone: str = DEFAULT_TIMEZONE, **context: Any
) -> Rendered:
    """Render a bundled template (see :meth:`Templates.render`)."""
    return _bundled(timezone).render(template, locale, **context)
