__version__ = "0.1.0"
from mimjax.api import load_pretrained
