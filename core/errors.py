"""The one error a domain rule raises about its input, whoever called it."""


class InvalidInput(ValueError):
    """A service's refusal of one input, in words a customer can act on; `param` names it.

    Services raise it without knowing about HTTP; the API answers `400 parameter_invalid`,
    the console shows the message and management commands print it. `param` is None when the
    refusal is about the request as a whole rather than one of its inputs.
    """

    def __init__(self, param: str | None, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message
