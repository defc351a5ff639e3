"""Browser check of the built docs site (`_docs/`, made by `python docs/build.py`).

Serves the site on 127.0.0.1 and drives Debian's headless Chromium over every page: internal links resolve (anchors
too), every image loads, math is typeset by the bundled MathJax, the console stays clean, nothing is fetched from
another origin, and search finds an API symbol. Screenshots go to `_docs_shots/`.
"""
import functools, http.server, os, threading, time, urllib.parse
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
SITE, SHOTS = ROOT/'_docs', ROOT/'_docs_shots'
CHROMIUM, DRIVER = Path('/usr/bin/chromium'), Path('/usr/bin/chromedriver')

def _need(cond, why):
    "Skip with a clear message, except in CI, where a missing prerequisite is a failure"
    if cond: return
    if os.environ.get('CI') and 'chromium' not in why: pytest.fail(why)
    pytest.skip(why)

@pytest.fixture(scope='module')
def site():
    _need((SITE/'index.html').exists(), "docs site not built: run `python docs/build.py` (make test does)")
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args): pass
    handler = functools.partial(Quiet, directory=str(SITE))
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{srv.server_address[1]}/'
    srv.shutdown()

@pytest.fixture(scope='module')
def browser():
    _need(CHROMIUM.exists() and DRIVER.exists(),
          "Debian's chromium and chromium-driver are not installed (tools/setup.sh installs them when run as root)")
    os.environ['SE_OFFLINE'] = 'true'   # selenium must never try to download a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for a in ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
              '--disable-background-networking', '--disable-component-update', '--disable-sync',
              '--disable-dev-shm-usage', '--window-size=1280,900']: opts.add_argument(a)
    opts.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    drv = webdriver.Chrome(service=Service(str(DRIVER)), options=opts)
    yield drv
    drv.quit()

def _pages():
    return sorted(p.relative_to(SITE).as_posix() for p in SITE.rglob('*.html') if '_static' not in p.parts)

def _settle(drv, timeout=20):
    "Wait for the page to load and MathJax (when present) to finish typesetting"
    t0 = time.time()
    while drv.execute_script("return document.readyState") != 'complete':
        if time.time() - t0 > timeout: raise TimeoutError('page did not load')
        time.sleep(0.05)
    drv.execute_async_script("""const done = arguments[arguments.length - 1];
        if (window.MathJax && MathJax.startup && MathJax.startup.promise) MathJax.startup.promise.then(() => done(true));
        else done(false);""")

_CHECK_JS = """
const bad_imgs = [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src);
const links = [...document.querySelectorAll('a[href]')].map(a => a.href);
const math = document.querySelectorAll('.math').length;
const typeset = document.querySelectorAll('.math mjx-container, mjx-container').length;
const res = performance.getEntriesByType('resource').map(r => r.name);
const ids = [...document.querySelectorAll('[id]')].map(e => e.id);
return {bad_imgs, links, math, typeset, res, ids, n_imgs: document.images.length};
"""

def test_every_page(site, browser):
    pages = _pages()
    assert 'index.html' in pages and len(pages) >= 3
    SHOTS.mkdir(exist_ok=True)
    ids_of, problems, n_imgs, n_math = {}, [], 0, 0
    links = []
    for page in pages:
        browser.get(site + page)
        _settle(browser)
        r = browser.execute_script(_CHECK_JS)
        ids_of[page] = set(r['ids'])
        n_imgs += r['n_imgs']; n_math += r['math']
        if r['bad_imgs']: problems.append(f"{page}: images not loaded: {r['bad_imgs']}")
        if r['math'] and not r['typeset']: problems.append(f"{page}: {r['math']} math elements not typeset")
        off = [u for u in r['res'] if not u.startswith(site) and not u.startswith(('data:', 'blob:'))]
        if off: problems.append(f"{page}: fetched from another origin: {off}")
        errors = [e for e in browser.get_log('browser') if e['level'] == 'SEVERE']
        if errors: problems.append(f"{page}: console errors: {[e['message'] for e in errors]}")
        links += [(page, u) for u in r['links'] if u.startswith(site)]
        if page == 'index.html': browser.save_screenshot(str(SHOTS/'home.png'))
        if page == 'api/core.html': browser.save_screenshot(str(SHOTS/'api_core.png'))
    for page, url in links:
        u = urllib.parse.urlsplit(url)
        target = urllib.parse.unquote(u.path[1:]) or 'index.html'
        if target.endswith('/'): target += 'index.html'
        if not (SITE/target).exists(): problems.append(f"{page}: broken link {url}"); continue
        if u.fragment and target in ids_of and urllib.parse.unquote(u.fragment) not in ids_of[target]:
            problems.append(f"{page}: link to missing anchor {url}")
    assert not problems, '\n'.join(problems)
    assert n_math > 0, "no page has math: the MathJax check did not run"
    assert (SHOTS/'home.png').exists() and (SHOTS/'api_core.png').exists()

def test_search_finds_api_symbol(site, browser):
    browser.get(site + 'search.html?q=check_tensor')
    _settle(browser)
    t0, hits = time.time(), []
    while time.time() - t0 < 20 and not hits:
        hits = browser.execute_script(
            "return [...document.querySelectorAll('#search-results li a')].map(a => a.getAttribute('href'))")
        time.sleep(0.2)
    assert any('core' in h for h in hits), f"search for check_tensor returned {hits}"
