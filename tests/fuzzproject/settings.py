"""Worker settings: ``tests.project.settings`` (same env variables) with our URLconf."""

from tests.project.settings import *  # noqa: F403

ROOT_URLCONF = "tests.fuzzproject.urls"
