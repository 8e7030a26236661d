"""The configuration file's schema: every key, its type, default, constraints and
meaning, declared once (``schema``), and what is derived from it by walking it:
the environment variables (``environment``), the error messages (``read``) and
the README's table (``doc``).

Built on msgspec: a ``Struct`` per section with ``forbid_unknown_fields``, so a
misspelt key is an error, and ``msgspec.Meta`` for the constraints and the help
text.  This package imports nothing of mailgate but ``mailgate.errors``: every
module that loads a section (``mailgate.config`` and the loaders beside the code
that uses a section) may import it.
"""
