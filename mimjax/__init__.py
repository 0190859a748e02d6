from mimjax.api import load_pretrained
