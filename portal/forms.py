"""The portal's forms. They only read what was typed; the services the API uses decide what is
valid (webhooks.services, webhooks.headers), and their refusals are shown next to the field
they name (`show_refusal`)."""

from typing import Any

from django import forms

from core.errors import InvalidInput
from webhooks import headers
from webhooks.catalog import ALL_EVENTS, EVENT_TYPES, is_known
from webhooks.models import WebhookEndpoint
from webhooks.services import DEFAULT_ROTATION_OVERLAP

EVENT_CHOICES = [
    (ALL_EVENTS, "All events"),
    *((name, name) for name in EVENT_TYPES if is_known(name)),
]
HEADERS_HELP = (
    "One header per line, as Name: value. Sent on every delivery. A sensitive value "
    f"(Authorization, Cookie, or a name with token, secret, key, password or signature) shows as "
    f"{headers.MASK}: leave it so to keep it, or type a new value."
)


def headers_text(stored: dict[str, Any]) -> str:
    """The stored headers as the form shows them, sensitive values masked (as the API does)."""
    return "\n".join(f"{name}: {value}" for name, value in headers.masked(stored).items())


class PortalForm(forms.Form):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("label_suffix", "")  # labels stand above their fields, as legends do
        super().__init__(*args, **kwargs)


class TextareaField(forms.CharField):
    """Text as typed, its line breaks as the API stores them: browsers send a textarea's as
    CRLF, and a description saved unchanged must stay unchanged."""

    def to_python(self, value: Any) -> str:
        return str(super().to_python(value)).replace("\r\n", "\n")


class EndpointForm(PortalForm):
    url = forms.CharField(
        label="URL",
        max_length=2048,
        help_text="Where deliveries are sent: an https:// URL (sandbox also takes http://).",
        widget=forms.TextInput(attrs={"inputmode": "url", "spellcheck": "false"}),
    )
    enabled_events = forms.MultipleChoiceField(
        label="Events",
        choices=EVENT_CHOICES,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="All events, or the types this endpoint receives.",
    )
    description = TextareaField(
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Free text for your own use.",
    )
    headers = TextareaField(
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false"}),
        help_text=HEADERS_HELP,
    )
    rate_limit = forms.IntegerField(
        required=False,
        help_text="Deliveries per second to this endpoint, across every worker; empty: no limit.",
    )
    delivery_order = forms.ChoiceField(
        label="Delivery order",
        choices=[
            (WebhookEndpoint.DeliveryOrder.UNORDERED, "Unordered: deliveries run concurrently"),
            (
                WebhookEndpoint.DeliveryOrder.ORDERED,
                "Ordered: one at a time, in publication order; a failing one holds back the rest",
            ),
        ],
        widget=forms.RadioSelect,
        initial=WebhookEndpoint.DeliveryOrder.UNORDERED,
    )

    @classmethod
    def initial_for(cls, endpoint: WebhookEndpoint) -> dict[str, Any]:
        return {
            "url": endpoint.url,
            "enabled_events": endpoint.enabled_events,
            "description": endpoint.description or "",
            "headers": headers_text(endpoint.headers),
            "rate_limit": endpoint.rate_limit,
            "delivery_order": endpoint.delivery_order,
        }

    def clean_headers(self) -> dict[str, str]:
        wanted: dict[str, str] = {}
        for number, line in enumerate(self.cleaned_data["headers"].splitlines(), 1):
            if not line.strip():
                continue
            name, colon, value = line.partition(":")
            if not colon:
                raise forms.ValidationError(f"Line {number} is not Name: value.")
            if name.strip() in wanted:
                raise forms.ValidationError(f"Line {number} names {name.strip()!r} again.")
            # "Name: value" as the form shows it: the one space after the colon is the form's,
            # any other the value's own (the API keeps it).
            wanted[name.strip()] = value.removeprefix(" ")
        return wanted

    def service_arguments(self, endpoint: WebhookEndpoint | None = None) -> dict[str, Any]:
        """The service's arguments that leave the endpoint as the form shows it (the service
        merges headers: for an edit, what the form no longer lists is removed). An edit sends
        only the fields changed, as a PATCH would: one saved as shown keeps what the API
        stored (the events' order, an empty description, a URL the policy refuses today)."""
        data = self.cleaned_data
        wanted = data["headers"]
        arguments = {
            "url": data["url"],
            "enabled_events": data["enabled_events"],
            "description": data["description"] or None,
            "headers": wanted if endpoint is None else headers.replacing(endpoint.headers, wanted),
            "rate_limit": data["rate_limit"],
            "delivery_order": data["delivery_order"],
        }
        if endpoint is None:
            return arguments
        return {name: value for name, value in arguments.items() if name in self.changed_data}


OVERLAP_CHOICES = [
    (0, "None: the current secret stops signing at once"),
    (3600, "1 hour"),
    (DEFAULT_ROTATION_OVERLAP, "24 hours"),
    (7 * 24 * 3600, "7 days"),
]


class RotateForm(PortalForm):
    overlap_seconds = forms.TypedChoiceField(
        label="Overlap",
        choices=OVERLAP_CHOICES,
        coerce=int,
        initial=DEFAULT_ROTATION_OVERLAP,
        widget=forms.RadioSelect,
        help_text=(
            "How long the current secret keeps signing beside the new one, so your receiver "
            "can switch without rejecting a delivery."
        ),
    )


def show_refusal(form: forms.Form, refusal: InvalidInput) -> None:
    """A service's refusal, next to the field it names (or above the form)."""
    form.add_error(refusal.param if refusal.param in form.fields else None, refusal.message)
