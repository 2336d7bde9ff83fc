"""pushrules: when an XMPP server should send XEP-0357 push notifications.

Import names: ``pushrules.model`` (the rules), ``pushrules.runtime`` (the engine to embed),
``pushrules.generated`` (tables rendered from the model).
"""

__version__ = "0.1.0"
