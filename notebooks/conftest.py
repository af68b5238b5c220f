"""pytest --nbval runs these notebooks in a kernel with no widget frontend: show turns as text.

`STREAMCHAT_DISPLAY=text` is what a user sets for any non-widget frontend (nbconvert, a
terminal console); the committed outputs were produced the same way, so they are compared.
"""

import os

os.environ["STREAMCHAT_DISPLAY"] = "text"
