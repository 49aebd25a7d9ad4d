"""pyats.reporter.exceptions: the errors a reporter's replies carry (`{'exception': ...}`)."""


class UnregisteredClientError(Exception):
    pass


class MessageReceiveError(Exception):
    pass


class ExistingClientError(Exception):
    pass
