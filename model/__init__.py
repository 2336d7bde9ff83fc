"""The declarative push-rules model: the single source of truth.

- ``session`` / ``registration``: python-statemachine classes, the reference executable model
  (every transition tagged with its rule and rationale, every impossible pair with its reason);
- ``rules``: the rule tags; ``events``: the server-event contract (names, fields, routing);
- ``guards`` / ``actions``: named predicates and effects the transitions refer to;
- ``config``: the rule options (``--set``); ``errors``: ``PushrulesError``, the common base;
- ``stanza``: stanza parsing and which stanzas wake a device; ``records``: what the machines act
  on; ``context``: what guards and actions see; ``world``: routing events to machine instances;
- ``reference``: the world driven by the python-statemachine classes;
- ``extract``: the plain-data IR every generated artifact is rendered from.
"""
