"""The README and docs/ stay true to the code: generated pages are current, shown commands parse, links resolve."""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
import unicodedata
from pathlib import Path
from typing import Any

import click
import pytest

from hubindex.cli import cli

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
PAGES = [REPO / "README.md", *sorted(DOCS.glob("*.md"))]
FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```$", flags=re.MULTILINE | re.DOTALL)
SHELL_SEPARATORS = {"&&", "||", ";", "|", "&", "(", ")"}
# click 8.3 and later mark a parameter that got no value with this sentinel instead of None.
UNSET = getattr(click.core, "UNSET", None)


def load_script(name: str) -> Any:
    """A script of docs/ as a module (they are not part of the package)."""
    spec = importlib.util.spec_from_file_location(f"hubindex_docs_{name}", DOCS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


make_quickstart = load_script("make_quickstart")
gen_cli_reference = load_script("gen_cli_reference")


def fenced_blocks(page: Path) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block of a page."""
    return FENCE.findall(page.read_text(encoding="utf-8"))


def block_id(page: Path, language: str, body: str) -> str:
    return f"{page.relative_to(REPO)}: ```{language} {body.strip().splitlines()[0][:60]!r}"


# ------------------------------------------------------------------------- shell command lines


def shell_commands(body: str, language: str) -> list[str]:
    """The command lines of a shell block: in `console` blocks only those after a `$ ` prompt."""
    commands: list[str] = []
    pending: list[str] = []
    for line in body.splitlines():
        if not pending:
            if language == "console":
                if not line.startswith("$ "):
                    continue  # output
                line = line[2:]
            if not line.strip() or line.lstrip().startswith("#"):
                continue
        pending.append(line)
        if make_quickstart.is_complete("\n".join(pending)):
            commands.append("\n".join(pending))
            pending = []
    assert not pending, f"a command never ends: {pending[0]!r}"
    return commands


def hubindex_invocations(command: str) -> list[list[str]]:
    """The arguments of every `hubindex` run in a shell command line (`a && b | c` gives each)."""
    lexer = shlex.shlex(command.replace("\\\n", " "), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    segments: list[list[str]] = [[]]
    for token in lexer:
        if token in SHELL_SEPARATORS:
            segments.append([])
        else:
            segments[-1].append(token)
    found = []
    for words in segments:
        while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0], flags=re.DOTALL):
            words = words[1:]  # VAR=value before the program
        if words and (words[0] == "hubindex" or words[0].endswith("/hubindex")):
            found.append(words[1:])
    return found


def check_arguments(args: list[str]) -> None:
    """Parse `hubindex ARGS` against the real click commands, without running anything.

    Unknown commands and options, options missing their value, extra arguments, missing required
    parameters and values their type refuses (a choice, a number range) raise click.UsageError.
    Path and file values are not checked: the files of an example need not exist here.
    """
    command: click.Command = cli
    ctx = click.Context(cli, info_name="hubindex", **cli.context_settings)
    while True:
        opts, rest, _ = command.make_parser(ctx).parse_args(list(args))
        params = command.get_params(ctx)
        for param in params:
            value = opts.get(param.name)
            if value is None or value is UNSET or getattr(param, "is_flag", False) or isinstance(param.type, (click.Path, click.File)):
                continue
            param.type_cast_value(ctx, value)
        if any(param.name == "help" and opts.get("help") for param in params):
            return
        if isinstance(command, click.Group):
            if not rest:
                return  # a group alone prints its help
            name, args = rest[0], rest[1:]
            sub = command.get_command(ctx, name)
            if sub is None:
                raise click.UsageError(f"no such command {ctx.command_path} {name}")
            command, ctx = sub, click.Context(sub, info_name=name, parent=ctx, **sub.context_settings)
            continue
        if rest and not ctx.allow_extra_args:
            raise click.UsageError(f"unexpected extra arguments {rest} for {ctx.command_path}")
        for param in params:
            if param.required and opts.get(param.name, UNSET) in (None, UNSET) and not param.envvar:
                raise click.UsageError(f"{ctx.command_path} needs {param.get_error_hint(ctx)}")
        return


SHELL_BLOCKS = [(page, language, body) for page in PAGES for language, body in fenced_blocks(page)
                if language in ("bash", "console", "sh")]


@pytest.mark.parametrize("page, language, body", SHELL_BLOCKS,
                         ids=[block_id(*block) for block in SHELL_BLOCKS])
def test_shown_hubindex_commands_parse(page: Path, language: str, body: str) -> None:
    for command in shell_commands(body, language):
        for args in hubindex_invocations(command):
            try:
                check_arguments(args)
            except click.UsageError as exc:
                pytest.fail(f"{page.relative_to(REPO)}: `hubindex {shlex.join(args)}` does not parse: "
                            f"{exc.format_message()}")


def test_the_checker_catches_what_it_should() -> None:
    check_arguments(["crawl", "timm", "--limit", "3"])
    check_arguments(["--index", "/tmp/i", "probe", "--where", "true", "--corpus", "bbc-news"])
    check_arguments(["zoo", "build", "--help"])
    for bad in (["crawl", "nowhere"], ["kappa", "--no-such-option"], ["probe", "--device", "tpu"],
                ["neighbors"], ["sql", "SELECT 1", "extra"], ["select", "mmi", "--budget"], ["nosuch"]):
        with pytest.raises(click.UsageError):
            check_arguments(bad)
    assert hubindex_invocations('A=1 hubindex sql "x" -p n 1 && ls | .venv/bin/hubindex plugins # c') == [
        ["sql", "x", "-p", "n", "1"], ["plugins"]]


SYNOPSIS_OPTION = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")


def synopses(body: str) -> list[str]:
    """The `hubindex ...` lines of a plain block, with their indented continuation lines, comments cut."""
    found: list[str] = []
    for line in body.splitlines():
        text = line.split("  #", 1)[0].split(" # ", 1)[0]
        if text.startswith("hubindex "):
            found.append(text)
        elif found and found[-1] and line[:1].isspace() and text.strip():
            found[-1] += " " + text.strip()
        elif not line[:1].isspace():
            found.append("")  # an unrelated line ends the continuation
    return [line for line in found if line]


def resolve(words: list[str]) -> tuple[click.Command, click.Context]:
    """The deepest command that the leading words of a synopsis name."""
    command: click.Command = cli
    ctx = click.Context(cli, info_name="hubindex", **cli.context_settings)
    for word in words:
        if not isinstance(command, click.Group) or word.startswith("-"):
            break
        sub = command.get_command(ctx, word)
        if sub is None:
            break
        command, ctx = sub, click.Context(sub, info_name=word, parent=ctx, **sub.context_settings)
    return command, ctx


SYNOPSIS_BLOCKS = [(page, language, body) for page in PAGES if page.name != "cli.md"
                   for language, body in fenced_blocks(page) if language in ("", "text")]


@pytest.mark.parametrize("page, language, body", SYNOPSIS_BLOCKS,
                         ids=[block_id(*block) for block in SYNOPSIS_BLOCKS])
def test_synopses_name_real_options(page: Path, language: str, body: str) -> None:
    """A hand-written synopsis (`hubindex kappa [--corpus NAME] ...`) names only options the command has."""
    for line in synopses(body):
        words = line.split()[1:]
        command, ctx = resolve([w for w in words if re.fullmatch(r"[a-z][\w-]*", w)][:3])
        known = {opt for param in command.get_params(ctx) for opt in [*param.opts, *param.secondary_opts]}
        known |= {opt for param in cli.get_params(ctx) for opt in param.opts}
        unknown = sorted(set(SYNOPSIS_OPTION.findall(line.split(" ", 1)[1])) - known)
        assert not unknown, f"{page.relative_to(REPO)}: `{ctx.command_path}` has no {unknown}: {line!r}"


# ------------------------------------------------------------------------- other code blocks


TOML_BLOCKS = [(page, body) for page in PAGES for language, body in fenced_blocks(page) if language == "toml"]
PYTHON_BLOCKS = [(page, body) for page in PAGES for language, body in fenced_blocks(page) if language == "python"]


@pytest.mark.parametrize("page, body", TOML_BLOCKS, ids=[block_id(p, "toml", b) for p, b in TOML_BLOCKS])
def test_toml_blocks_parse(page: Path, body: str) -> None:
    tomllib = pytest.importorskip("tomllib")
    tomllib.loads(body)


@pytest.mark.parametrize("page, body", PYTHON_BLOCKS, ids=[block_id(p, "python", b) for p, b in PYTHON_BLOCKS])
def test_python_blocks_compile(page: Path, body: str) -> None:
    compile(body, f"{page.relative_to(REPO)} (python block)", "exec")


# ------------------------------------------------------------------------- the CLI reference


def test_cli_reference_is_current() -> None:
    """docs/cli.md is exactly what docs/gen_cli_reference.py writes now (run in a clean process)."""
    done = subprocess.run([sys.executable, str(DOCS / "gen_cli_reference.py"), "-"], capture_output=True,
                          text=True, cwd=REPO, check=True)
    current = (DOCS / "cli.md").read_text(encoding="utf-8")
    assert current == done.stdout, "docs/cli.md is out of date: run docs/gen_cli_reference.py"


def reference_sections() -> dict[str, str]:
    """docs/cli.md by command path: each command's heading to the next one."""
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    parts = re.split(r"^#{2,4} `(hubindex(?: [^`]+)?)`$", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2]))


def test_every_command_and_option_is_in_the_reference() -> None:
    sections = reference_sections()
    ctx = gen_cli_reference.root_context(cli)
    commands = list(gen_cli_reference.walk(cli, ctx))
    assert {"hubindex crawl hf", "hubindex crawl timm", "hubindex crawl local", "hubindex zoo build"} <= {
        c.command_path for c, _ in commands}
    for command_ctx, command in commands:
        path = command_ctx.command_path
        assert path in sections, f"docs/cli.md has no section for `{path}`: run docs/gen_cli_reference.py"
        for param in command.get_params(command_ctx):
            names = [*param.opts, *param.secondary_opts] if isinstance(param, click.Option) else [
                param.human_readable_name]
            for name in names:
                assert name in sections[path], f"docs/cli.md lacks {name} of `{path}`: run docs/gen_cli_reference.py"


# ------------------------------------------------------------------------- links and the site


def slug(heading: str) -> str:
    """The id MkDocs (Python-Markdown's toc) gives a heading."""
    text = re.sub(r"<[^>]+>", "", heading).replace("`", "")
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return {slug(h) for h in re.findall(r"^#{1,6} (.+?)\s*$", text, flags=re.MULTILINE)}


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_relative_links_resolve(page: Path) -> None:
    """Every relative link of the README and the docs names a file that exists, and a heading in it."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    text = re.sub(r"`[^`\n]*`", "", text)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in anchors(linked)):
            broken.append(target)
    assert not broken, f"{page.relative_to(REPO)} links to what does not exist: {broken}"


def test_readme_links_into_every_guide() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    linked = {target.partition("#")[0] for target in LINK.findall(readme)}
    missing = [p.name for p in DOCS.glob("*.md") if f"docs/{p.name}" not in linked]
    assert not missing, f"README.md links to no {missing}"


def test_mkdocs_build_is_strict_clean(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]


# ------------------------------------------------------------------------- the quickstart


def words(command: str) -> list[str]:
    """A command's words with their whitespace normalised (a quoted SQL string may wrap differently)."""
    return [" ".join(word.split()) for word in shlex.split(command.replace("\\\n", " "))]


def test_the_quickstart_is_the_main_command_step_by_step() -> None:
    """The README's one-line main job and its quickstart run the same commands in the same order."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    main_job = next(body for language, body in FENCE.findall(readme)
                    if language == "bash" and body.startswith("bash .ci/install && "))
    lexer = shlex.shlex(main_job.replace("\\\n", " "), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    chained: list[list[str]] = [[]]
    for token in lexer:
        if token == "&&":
            chained.append([])
        else:
            chained[-1].append(" ".join(token.split()))
    steps = [words(step.command) for step in make_quickstart.quickstart_steps(readme)]
    assert steps == chained


def test_the_quickstart_page_runs_the_readme_commands() -> None:
    """docs/quickstart.md shows the README's quickstart commands, in order (rerun docs/make_quickstart.py)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    expected = [step.command for step in make_quickstart.quickstart_steps(readme)]
    page = DOCS / "quickstart.md"
    shown = [command for language, body in fenced_blocks(page) if language == "console"
             for command in shell_commands(body, language)]
    assert shown == expected, "docs/quickstart.md is out of date: run docs/make_quickstart.py"


def test_quickstart_transcript_trims_long_output_visibly() -> None:
    lines = [f"line {i}" for i in range(100)]
    kept = make_quickstart.trimmed(lines, 3, 2)
    assert kept == ["line 0", "line 1", "line 2", "... (95 lines cut) ...", "line 98", "line 99"]
    assert make_quickstart.trimmed(lines[:6], 3, 2) == lines[:6]
    assert make_quickstart.clean_output(b"10%\r50%\r100% done\n\x1b[1mbold\x1b[0m\n\n") == ["100% done", "bold"]


def test_the_readme_is_short() -> None:
    """A newcomer's page: what it is, install, a quickstart, links; the reference lives in docs/."""
    assert len((REPO / "README.md").read_text().splitlines()) < 200


def test_the_sql_guide_describes_every_catalog_table(tmp_path: Path) -> None:
    from hubindex.catalog import Catalog

    with Catalog(tmp_path / "catalog.duckdb") as catalog:
        tables = [name for (name,) in catalog.conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
            "AND table_catalog = current_database() ORDER BY 1").fetchall()]
        columns = catalog.conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'main' "
            "AND table_catalog = current_database() AND table_name <> 'schema_migrations'").fetchall()
    guide = (DOCS / "sql.md").read_text()
    assert len(tables) >= 15
    assert [t for t in tables if f"`{t}`" not in guide] == []
    assert [f"{t}.{c}" for t, c in columns if f"`{c}`" not in guide] == []


def test_the_web_guide_documents_every_page() -> None:
    """Every route of `hubindex serve` (its JSON form included) is a row of docs/web.md's table."""
    from hubindex.web.app import registered_routes

    guide = (DOCS / "web.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([^`]+)`", guide, flags=re.M))
    # `/checkpoints/{checkpoint_id:path}` is documented as `/checkpoints/<id>`; `X.json` with X.
    shapes = {re.sub(r"<[^>]+>", "<>", route) for route in documented}
    paths = {route.path for route in registered_routes()}
    assert len(paths) > 10
    missing = [path for path in sorted(paths)
               if re.sub(r"\{[^}]+\}", "<>", path.removesuffix(".json")).replace("/index", "/") not in shapes]
    assert not missing, f"docs/web.md has no row for {missing}"
