"""Path of the provider's and algorithms' icon."""

import os

ICON_PATH = os.path.join(os.path.dirname(__file__), "icons", "hsrdiff.svg")
