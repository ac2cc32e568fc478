"""The one error type whose message is meant for the user, shared by services, CLI and pages."""


class UserError(RuntimeError):
    """A failure with a message meant for the user; printed as one line."""
