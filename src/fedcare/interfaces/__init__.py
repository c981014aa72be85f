"""Interfaces: what people and their programs touch. The Python API (`simulate`), the `fedcare`
command, the terminal and HTML reports, `fedcare benchmark` and `fedcare audit`. They read the run
folder and call the layers below; nothing below imports them."""
