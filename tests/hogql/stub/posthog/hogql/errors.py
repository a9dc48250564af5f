# hogql_parser raises these; PostHog's real module defines more, the parser needs only these names.
class BaseHogQLError(Exception):
    def __init__(self, message="", start=None, end=None, node=None, **kwargs):
        super().__init__(message)
        self.message = message
        self.start = start
        self.end = end


class ExposedHogQLError(BaseHogQLError):
    pass


class InternalHogQLError(BaseHogQLError):
    pass


class SyntaxError(ExposedHogQLError):
    pass


class QueryError(ExposedHogQLError):
    pass


class NotImplementedError(InternalHogQLError):
    pass


class ParsingError(InternalHogQLError):
    pass


class ResolutionError(InternalHogQLError):
    pass
