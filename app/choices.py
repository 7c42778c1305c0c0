"""The closed sets of values some record fields accept. The models validate against them, the
OpenAPI document lists them and the command line offers them as choices; they live apart from
app/models.py so that `berth` starts without importing the models."""

SCOPES = ("admin", "user")  # a token's scope; a route's auth.scope
KEY_TYPES = ("ec256", "ec384", "rsa2048", "rsa3072", "rsa4096")  # a certificate's key
RESTART_POLICIES = ("no", "on-failure", "always")  # a service's restart policy
