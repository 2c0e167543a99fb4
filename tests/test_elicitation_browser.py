"""The whole path as people use it, in a real browser (Debian's chromium, headless, driven by
selenium through chromium-driver): create a study from ICM searches (the tiny model), open the
invitation, answer (by keyboard and by clicking labels), change an answer, submit, see it in the
researcher's view, export, re-search with the answers, and the report's row beside the
simulated-gold run.

Screenshots (desktop and 390 px phone width, the researcher's view) go to
``$PLURAL_ICM_SCREENSHOTS`` (the committed ones: docs/img/) or the test's temporary directory.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from elicitation_support import CSRF, Server
from settings_support import typed_settings

from plural_icm.elicitation.agreement import fleiss_kappa
from plural_icm.elicitation.store import StudyStore

_MISSING = [what for what, ok in (
    ("the selenium package (pip install -e '.[elicitation]')", importlib.util.find_spec("selenium")),
    ("flask/waitress (pip install -e '.[elicitation]')",
     importlib.util.find_spec("flask") and importlib.util.find_spec("waitress")),
    ("Debian's chromium (apt-get install chromium)", shutil.which("chromium")),
    ("chromium-driver (apt-get install chromium-driver)", shutil.which("chromedriver")),
) if not ok]

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(bool(_MISSING), reason=f"browser tier needs {', '.join(_MISSING)}")]

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")
TINY = ("model.name=tiny", "logger=none", "progress=false", "icm.max_iters=8", "icm.patience=4",
        "icm.num_seed=2", "icm.checkpoint_every=2", "dataset.personas=[progressive]")


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for f in FLAGS:
        opts.add_argument(f)
    opts.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")  # a fresh profile
    opts.add_argument("--window-size=1280,900")
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _shot(driver, name: str, shots: Path, width: int, height: int) -> Path:
    driver.set_window_size(width, height)
    height_needed = driver.execute_script("return document.documentElement.scrollHeight")
    # the window's height includes what headless chromium reserves outside the page (143 px here)
    outside = driver.execute_script("return window.outerHeight - window.innerHeight")
    driver.set_window_size(width, max(height, min(int(height_needed) + int(outside) + 20, 2400)))
    driver.execute_script("window.scrollTo(0, 0)")
    path = shots / f"elicitation-{name}.png"
    assert driver.save_screenshot(str(path)), path
    return path


def _navigates(driver, act) -> None:
    """Run ``act`` (a click or key that submits a form or follows a link) and wait until the next
    page has replaced this one: WebDriver returns from a click before the navigation it starts
    has finished, so reading the page at once may read the old one (seen on a loaded CI machine)."""
    from selenium.webdriver.support.ui import WebDriverWait

    # a mark on this page's window object: the next page's does not have it. (Waiting for an
    # element of the old page to go stale failed 1 run in 6: chromedriver sometimes answers for a
    # node of a replaced document with an inspector error instead of a stale-element one.)
    driver.execute_script("window.__plural_icm_old_page = true")
    act()
    WebDriverWait(driver, 60).until(lambda d: d.execute_script(
        "return !window.__plural_icm_old_page && document.readyState === 'complete'"))


def _no_horizontal_scroll(driver) -> None:
    assert driver.execute_script(
        "return document.documentElement.scrollWidth <= window.innerWidth + 1"), "page wider than the phone"


def _my_keys(study: Path, questions) -> list[str]:
    """The browser annotator's stored answers, in question order."""
    store = StudyStore(study)
    inv = next(i for i in store.invitations() if i.finished_at is not None)
    got = store.answers_of(inv.id)
    return [got[q.id] for q in questions]


def _answer_by_http(link: str, answers: dict[int, str]) -> None:
    import requests

    for qid, key in answers.items():
        page = requests.get(f"{link}/q/{qid}", timeout=30)
        r = requests.post(f"{link}/q/{qid}", data={"csrf": CSRF.search(page.text).group(1),
                                                   "option": key}, allow_redirects=False, timeout=30)
        assert r.status_code == 303, r.text[-300:]
    page = requests.get(f"{link}/review", timeout=30)
    r = requests.post(f"{link}/submit", data={"csrf": CSRF.search(page.text).group(1)},
                      allow_redirects=False, timeout=30)
    assert r.status_code == 303, r.text[-300:]


def test_study_in_a_browser_from_invitation_to_re_search(tmp_path, tiny_model_dir, monkeypatch, capsys,
                                                         browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from plural_icm.elicitation.__main__ import main

    shots = Path(os.environ.get("PLURAL_ICM_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("PLURAL_ICM_OUTPUT", str(tmp_path / "out"))
    overrides = [f"model.base={tiny_model_dir}", f"model.instruct={tiny_model_dir}", *TINY]
    study = tmp_path / "study.db"
    steps: list[str] = []

    # 1. a study from the searches: 2 questions for the persona, three invitations
    assert main(["create", "--study", str(study), "--k", "2", "--method", "confidence",
                 "--annotators", "3", "--run-searches", "--", *overrides]) == 0
    printed = capsys.readouterr().out
    invitation, *others = re.findall(r"progressive\s+a-[0-9a-f]{8}\s+(http://\S+/a/\S+)", printed)
    researcher = re.search(r"researcher's view \(keep it private\): (http://\S+/r/\S+)", printed).group(1)
    questions = StudyStore(study).questions("progressive")
    steps.append(f"created the study ({len(questions)} questions, 3 invitations) and read the links "
                 f"it printed")

    server = Server(study, tmp_path / "server.log")
    base = server.start()
    invitation = invitation.replace("http://127.0.0.1:8765", base)
    researcher = researcher.replace("http://127.0.0.1:8765", base)
    try:
        d = browser
        # 2. open the invitation: who the questions are for
        d.get(invitation)
        assert "urban progressives" in d.find_element(By.CLASS_NAME, "who").text
        _shot(d, "welcome-desktop", shots, 1280, 800)
        start = d.find_element(By.LINK_TEXT, "Start")
        _navigates(d, lambda: start.send_keys(Keys.ENTER))  # keyboard
        steps.append("opened the invitation; it names the group; pressed Enter on Start")

        # 3. question 1 of 2, answered with the keyboard only: Space on the first option, the
        #    arrow key moves the choice to the next, Enter submits the form
        assert "Question 1 of 2" in d.find_element(By.ID, "progress-label").text
        radios = d.find_elements(By.CSS_SELECTOR, "input[type=radio]")
        labels = [d.find_element(By.CSS_SELECTOR, f"label[for={r.get_attribute('id')}]").text for r in radios]
        assert len(radios) >= 2 and all(labels)
        radios[0].send_keys(Keys.SPACE)
        radios[0].send_keys(Keys.ARROW_DOWN)
        assert radios[1].is_selected() and not radios[0].is_selected()
        first_choice = labels[1]
        _shot(d, "question-desktop", shots, 1280, 800)
        _navigates(d, lambda: radios[1].send_keys(Keys.ENTER))
        steps.append(f"question 1 of 2: Space, Arrow Down, Enter (keyboard only) -> {first_choice!r}")

        # 4. question 2 of 2 at a phone's width, chosen by tapping the label's text (an option
        #    that is not the gold one, so the re-search shows it used the person's answer)
        d.set_window_size(390, 844)
        assert "Question 2 of 2" in d.find_element(By.ID, "progress-label").text
        _no_horizontal_scroll(d)
        option_labels = d.find_elements(By.CSS_SELECTOR, "label.option")
        keys = [r.get_attribute("value") for r in d.find_elements(By.CSS_SELECTOR, "input[type=radio]")]
        pick = next(i for i, k in enumerate(keys) if k != questions[1].gold_key)
        option_labels[pick].find_element(By.TAG_NAME, "span").click()
        assert d.find_elements(By.CSS_SELECTOR, "input[type=radio]")[pick].is_selected()
        second_choice = option_labels[pick].text
        _shot(d, "question-phone", shots, 390, 844)
        _navigates(d, d.find_element(By.CSS_SELECTOR, "button[type=submit]").click)
        steps.append(f"question 2 of 2 at 390 px: tapped the label -> {second_choice!r}; no "
                     f"horizontal scrolling")

        # 5. the review lists both; change the first answer
        review = d.find_element(By.TAG_NAME, "ol").text
        assert first_choice in review and second_choice in review
        _shot(d, "review-phone", shots, 390, 844)
        _navigates(d, d.find_elements(By.PARTIAL_LINK_TEXT, "Change")[0].click)
        radios = d.find_elements(By.CSS_SELECTOR, "input[type=radio]")
        assert radios[1].is_selected()  # the saved answer is shown
        radios[0].click()
        changed = d.find_element(By.CSS_SELECTOR, f"label[for={radios[0].get_attribute('id')}]").text
        _navigates(d, d.find_element(By.CSS_SELECTOR, "button[type=submit]").click)
        review = d.find_element(By.TAG_NAME, "ol").text
        assert changed in review and first_choice not in review.split("\n")[1]
        steps.append(f"review: changed answer 1 from {first_choice!r} to {changed!r}, back on the review")

        # 6. submit, thank-you page; the link now shows only the thank-you
        _navigates(d, d.find_element(By.XPATH, "//button[starts-with(normalize-space(.), 'Submit')]").click)
        assert "Thank you" in d.find_element(By.TAG_NAME, "h1").text
        _shot(d, "thanks-phone", shots, 390, 700)
        d.get(invitation)
        assert "Thank you" in d.find_element(By.TAG_NAME, "h1").text
        steps.append("submitted; thank-you page; reopening the link shows the thank-you only")

        # 7. two more annotators through HTTP: one agrees, one answers the other options
        mine = {q.id: k for q, k in zip(questions, _my_keys(study, questions))}
        other = {qid: next(o.key for o in q.options if o.key != k)
                 for (qid, k), q in zip(mine.items(), questions)}
        for link, answers in zip(others, (mine, other)):
            _answer_by_http(link.replace("http://127.0.0.1:8765", base), answers)
        steps.append("two more annotators answered through HTTP (one as the browser, one not)")

        # 8. the researcher's view
        d.set_window_size(1280, 900)
        d.get(researcher)
        row = d.find_element(By.XPATH, "//tr[th[@scope='row' and text()='progressive']]").text
        assert row.split()[:5] == ["progressive", "3", "3", "3", "3"]  # invited/opened/started/finished
        keys = sorted({o.key for q in questions for o in q.options})
        table = [[2 * (mine[q.id] == k) + (other[q.id] == k) for k in keys] for q in questions]
        kappa = fleiss_kappa(table)
        assert row.split()[5:] == ["0.67", f"{kappa:.2f}"]  # majority share 2/3; Fleiss' kappa
        body = d.find_element(By.TAG_NAME, "body").text
        assert f"{changed}: 2" in body and f"{second_choice}: 2" in body
        _shot(d, "researcher-desktop", shots, 1280, 900)
        steps.append("researcher's view: invited 3, opened 3, started 3, finished 3; votes 2-1 per "
                     f"question, majority share 0.67, Fleiss' kappa {kappa:.2f}")
    finally:
        server.stop()
    assert all(tok not in (tmp_path / "server.log").read_text()
               for tok in (invitation.rsplit("/", 1)[1], researcher.rsplit("/", 1)[1]))

    # 9. export, then the re-search with the people's answers and the simulated-gold baseline
    answers = tmp_path / "answers.jsonl"
    assert main(["export", "--study", str(study), "--out", str(answers)]) == 0
    rows = [json.loads(x) for x in answers.read_text().splitlines()]
    assert [r["source"] for r in rows] == ["human", "human"]
    assert [r["option_key"] for r in rows] == list(mine.values()) and rows[1]["matches_gold"] is False
    steps.append(f"exported {len(rows)} answers: {[(r['group_id'], r['option_key']) for r in rows]}")

    from analysis.load import load_collaborative
    from analysis.tables import collaborative_table
    from plural_icm.elicitation.study import compose
    from plural_icm.pipeline.collaborative import run_collaborative

    common = [*overrides, "experiment=collaborative", "collaborative.k_per_fold=2",
              "collaborative.selection=[confidence]"]
    human = run_collaborative(typed_settings(compose([*common, f"collaborative.answers_file={answers}"])))
    summary = human["progressive"]["confidence"]
    assert summary["asked"] == [r["group_id"] for r in rows]  # the study asked what the stage asks
    run_dir = tmp_path / "out" / "collaborative" / "tiny" / "demo" / "progressive" / "confidence-answers" / "fold0"
    assert [json.loads(x)["option_key"] for x in (run_dir / "answers_used.jsonl").read_text().splitlines()] \
        == [r["option_key"] for r in rows]
    specs = [json.loads(p.read_text()) for p in
             (tmp_path / "out" / "searches" / "tiny" / "demo" / "fold0" / "progressive").glob("*/spec.json")]
    fixed = next(s["fixed"] for s in specs if s.get("fixed"))
    for r in rows:  # the people's answer is the one claim of its question fixed True
        mine = {k: v for k, v in fixed.items() if k.startswith(f"demo/{r['group_id']}/")}
        assert mine and [k.rsplit("/o", 1)[1] for k, v in mine.items() if v] == [r["option_key"]]
    run_collaborative(typed_settings(compose(common)))  # the simulated-gold baseline, beside it
    t = collaborative_table(load_collaborative(tmp_path / "out"))
    assert sorted(t.answers) == ["human", "simulated_gold"]
    h = t[t.answers == "human"].iloc[0]
    assert h.annotators == 3 and h.majority_share == pytest.approx(2 / 3)
    assert h.fleiss_kappa == pytest.approx(kappa)
    assert h.answers_match_gold == pytest.approx(sum(r["matches_gold"] for r in rows) / len(rows))
    assert t[t.answers == "simulated_gold"].iloc[0].answers_match_gold == 1.0
    steps.append(f"re-searched with the answers (asked {summary['asked']}), and with simulated gold; "
                 f"report rows: {t[['answers', 'test_accuracy', 'before_test_accuracy', 'answers_match_gold']].to_dict('records')}")
    print("\n" + "\n".join(f"{i}. {s}" for i, s in enumerate(steps, 1)))


def test_single_form_in_a_browser(tmp_path, browser):
    """The single-form layout (``create --layout form``), in the browser: all questions on one
    page, answered by keyboard (Space, arrows, Tab between questions) and by tapping labels at a
    390 px phone width without horizontal scrolling; the browser refuses to send the form while a
    question is unanswered; the review's *Change* returns to the form with the saved answers
    checked; the changed answer is the one stored; submit; thank-you. A synthetic study (no ICM
    search), so it takes seconds."""
    from elicitation_support import answer_counts, synthetic_study
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    shots = Path(os.environ.get("PLURAL_ICM_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    study = tmp_path / "study.db"
    store, _ = synthetic_study(study, personas=("north",), layout="form")
    (_, token), = store.add_invitations("north", 1)
    qids = [q.id for q in store.questions("north")]
    steps: list[str] = []
    server = Server(study, tmp_path / "server.log")
    base = server.start()
    d = browser
    try:
        d.get(f"{base}/a/{token}")
        assert "northerners" in d.find_element(By.CLASS_NAME, "who").text
        start = d.find_element(By.LINK_TEXT, "Start")
        _navigates(d, lambda: start.send_keys(Keys.ENTER))
        assert d.current_url.endswith(f"/a/{token}/form")
        assert len(d.find_elements(By.TAG_NAME, "fieldset")) == 4
        assert [e.text for e in d.find_elements(By.CLASS_NAME, "qnum")] == \
            [f"Question {i} of 4" for i in range(1, 5)]
        steps.append("opened the invitation, Enter on Start: one page with the 4 questions")

        # keyboard only: question 1 Space then Arrow Down (its 2nd option), Tab to question 2, Space
        first = d.find_element(By.ID, "q1-opt-1")
        first.send_keys(Keys.SPACE)
        first.send_keys(Keys.ARROW_DOWN)
        assert d.find_element(By.ID, "q1-opt-2").is_selected() and not first.is_selected()
        d.switch_to.active_element.send_keys(Keys.TAB)
        assert d.switch_to.active_element.get_attribute("id") == "q2-opt-1"
        d.switch_to.active_element.send_keys(Keys.SPACE)
        assert d.find_element(By.ID, "q2-opt-1").is_selected()
        _shot(d, "form-desktop", shots, 1280, 800)
        # Enter with questions 3 and 4 unanswered: the browser does not send the form
        d.switch_to.active_element.send_keys(Keys.ENTER)
        assert d.current_url.endswith("/form") and answer_counts(study) == {}
        assert d.switch_to.active_element.get_attribute("id") == "q3-opt-1"  # where it is missing
        assert d.execute_script("return document.querySelector('form').checkValidity()") is False
        steps.append("keyboard: Space, Arrow Down on question 1, Tab, Space on question 2; Enter with "
                     "two unanswered: not sent, focus on question 3")

        # phone width: tap the labels of questions 3 and 4
        d.set_window_size(390, 844)
        _no_horizontal_scroll(d)
        for i in (3, 4):
            d.find_element(By.CSS_SELECTOR, f"label[for=q{i}-opt-3] span").click()
            assert d.find_element(By.ID, f"q{i}-opt-3").is_selected()
        _shot(d, "form-phone", shots, 390, 844)
        _navigates(d, d.find_element(By.CSS_SELECTOR, "button[type=submit]").click)
        review = d.find_element(By.TAG_NAME, "ol").text
        assert "4 of 4 answered" in d.find_element(By.TAG_NAME, "body").text
        for i, opt in enumerate((1, 0, 2, 2)):
            assert f"Option {opt} of question {i}" in review
        assert answer_counts(study) == {(1, q): [k] for q, k in zip(qids, "1022")}
        _shot(d, "form-review-phone", shots, 390, 844)
        steps.append("390 px: no horizontal scroll; tapped the labels of questions 3 and 4; saved: "
                     "the review lists the 4 answers")

        # change question 3 from the review: back on the form, the saved answers are checked
        _navigates(d, d.find_elements(By.PARTIAL_LINK_TEXT, "Change")[2].click)
        assert d.current_url.endswith(f"/form#q-{qids[2]}")
        assert [d.find_element(By.ID, f"q{i}-opt-{o}").is_selected()
                for i, o in ((1, 2), (2, 1), (3, 3), (4, 3))] == [True] * 4
        d.find_element(By.CSS_SELECTOR, "label[for=q3-opt-1] span").click()
        _no_horizontal_scroll(d)
        _navigates(d, d.find_element(By.CSS_SELECTOR, "button[type=submit]").click)
        assert "Option 0 of question 2" in d.find_element(By.TAG_NAME, "ol").text
        steps.append("Change on question 3: the form with the 4 saved answers checked; chose another; "
                     "the review shows it")

        _navigates(d, d.find_element(By.XPATH, "//button[starts-with(normalize-space(.), 'Submit')]").click)
        assert "Thank you" in d.find_element(By.TAG_NAME, "h1").text
        d.get(f"{base}/a/{token}/form")
        assert "Thank you" in d.find_element(By.TAG_NAME, "h1").text
        steps.append("submitted; thank-you page; the form's link now shows the thank-you only")
    finally:
        server.stop()
    assert answer_counts(study) == {(1, q): [k] for q, k in zip(qids, "1002")}
    assert StudyStore(study).invitations()[0].finished_at is not None
    assert token not in (tmp_path / "server.log").read_text()
    print("\n" + "\n".join(f"{i}. {s}" for i, s in enumerate(steps, 1)))
