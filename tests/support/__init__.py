"""What the tests share: worker runners, the OTLP receiver, brokers, clients, harnesses.

See docs/development.md, "Where the tests are". Nothing here is a test, and no test
module imports another test module or ``conftest``: helpers live here.
"""
