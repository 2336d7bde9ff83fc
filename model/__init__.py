"""The declarative push-rules model: the single source of truth.

- ``session`` / ``registration``: python-statemachine classes, the reference executable model;
- ``events``: the server-event contract (names, fields, routing to the machines);
- ``guards`` / ``actions``: named predicates and effects the transitions refer to;
- ``importance``: which stanzas wake a device;
- ``extract``: the plain-data IR that every generated artifact is rendered from.
"""
