"""The target policy the test processes run with."""

# The tests' backends listen on loopback, which routes of user tokens may reach only when the
# operator lists it (app/target_policy.py). Tests of the default build their own Settings.
LOOPBACK_ALLOWED = "0.0.0.0/0,::/0,127.0.0.0/8,::1/128"
