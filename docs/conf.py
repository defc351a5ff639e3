"Sphinx configuration for the latent_comm docs site (built offline from nbdev's processed notebooks by docs/build.py)."
from configparser import ConfigParser
from pathlib import Path

_cfg = ConfigParser(delimiters=['=']); _cfg.read(Path(__file__).parent.parent/'settings.ini')
_d = _cfg['DEFAULT']
project = _d['lib_name']
author = _d['author']
copyright = _d['copyright']
release = version = _d['version']

extensions = ['myst_nb']
nb_execution_mode = 'off'                     # notebooks carry their outputs; `make reproduce` refreshes them
nb_render_markdown_format = 'myst'            # show_doc output is Markdown
myst_enable_extensions = ['dollarmath', 'amsmath']
myst_heading_anchors = 3
source_suffix = {'.ipynb': 'myst-nb', '.md': 'myst-nb'}
exclude_patterns = ['_build', '**.ipynb_checkpoints']
suppress_warnings = ['myst.header', 'mystnb.unknown_mime_type', 'misc.highlighting_failure']

html_theme = 'sphinx_book_theme'
html_title = project
html_static_path = ['_static']
html_favicon = '_static/favicon.svg'          # local favicon: no 404 in the console
html_context = {'default_mode': 'light'}
html_theme_options = {'show_toc_level': 2, 'use_download_button': False, 'use_fullscreen_button': True, 'navigation_with_keys': False, 'search_bar_text': 'Search the docs...'}
html_show_sourcelink = False
html_copy_source = False
# MathJax 3 is served from the site itself (copied from the npm registry by tools/setup.sh): nothing comes from a CDN.
mathjax_path = 'mathjax/tex-chtml.js'
mathjax3_config = {'tex': {'inlineMath': [['\\(', '\\)']], 'displayMath': [['\\[', '\\]']]}}
