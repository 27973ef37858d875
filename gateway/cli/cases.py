"""Rule tests: a cases file of payloads and what the config must do with each (`gateway test --cases`).

Each case goes through the dry run (`gateway.routing.dry_run`), so it sees exactly what `gateway test
PAYLOAD` shows, secrets masked; expected values are masked the same way before comparing.

    cases:
      - name: VIP mail goes to Slack
        payload_file: payloads/vip.json          # relative to the cases file; or `payload:` inline
        routes: [vip-mail]                       # exactly the routes that match (or matched / not_matched)
        expect:
          vip-mail/support-slack:                # <route>/<destination>
            body: {text: "VIP mail from Priya"}  # a partial match: only the keys written are compared
            body_paths: {"$.blocks[0].text.text": "..."}
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
from pydantic import Field, model_validator

from gateway.cli.case_compare import ExpectedRequest, compare_request
from gateway.config.schema import Model
from gateway.config.yaml_source import join_path, read_yaml
from gateway.errors import ConfigError, ConfigProblem, GatewayError, plural
from gateway.mask import Masker
from gateway.routing.chain import StepAnswer
from gateway.routing.compiled import LoadedConfig
from gateway.routing.dry_run import pick_source, route_in_turn, sample_answer
from gateway.routing.jsonpath import compile_path


class EarlierPayload(Model):
    """A payload that arrives before the case's own, on the same source."""

    payload: Any = Field(None, description="The payload, inline (sent as JSON).")
    payload_file: str | None = Field(None, description="A payload file, relative to the cases file.")

    @model_validator(mode="after")
    def _one_payload(self) -> EarlierPayload:
        _check_one_payload(self)
        return self


def _check_one_payload(spec: Model) -> None:
    given = [name for name in ("payload", "payload_file") if name in spec.model_fields_set]
    if len(given) != 1:
        raise ValueError("give the payload as exactly one of 'payload' (inline) or 'payload_file'")


class Case(Model):
    name: str | None = Field(None, description="Shown on the PASS/FAIL line; default: the payload file.")
    payload: Any = Field(None, description="The payload, inline (sent as JSON).")
    payload_file: str | None = Field(None, description="A payload file, relative to the cases file.")
    previous: list[EarlierPayload] = Field(
        default_factory=list, description="Payloads that arrive first, in order: the conversation state and the "
        "once_per windows they leave are what the case's payload is routed on.",
    )
    source: str | None = Field(None, description="Source the payload arrives on; optional with one source.")
    routes: list[str] | None = Field(None, description="Exactly the routes that match, in any order.")
    matched: list[str] = Field(default_factory=list, description="Routes that must match (others may too).")
    not_matched: list[str] = Field(default_factory=list, description="Routes that must not match.")
    expect: dict[str, ExpectedRequest] = Field(
        default_factory=dict, description="'<route>/<destination>' -> the request it must render."
    )
    step_responses: dict[str, Any] = Field(
        default_factory=dict, description="Step id -> a sample answer's body (a YAML structure is sent as JSON, a "
        "string as text), so the requests that run after that step are rendered and checked."
    )

    @model_validator(mode="after")
    def _well_formed(self) -> Case:
        _check_one_payload(self)
        if self.routes is not None and (self.matched or self.not_matched):
            raise ValueError("'routes' is the exact set: drop 'matched'/'not_matched', or drop 'routes'")
        if self.routes is None and not (self.matched or self.not_matched or self.expect):
            raise ValueError("a case needs something to check: routes, matched, not_matched or expect")
        return self


class CasesFile(Model):
    cases: list[Case] = Field(min_length=1, description="The cases, run in order.")


@dataclass(frozen=True)
class LoadedCase:
    """A case ready to run: its payload read and its source resolved."""

    name: str
    source: str
    body: bytes
    spec: Case
    previous: tuple[bytes, ...]
    expect: tuple[Expectation, ...]
    answers: dict[str, StepAnswer]


@dataclass(frozen=True)
class Expectation:
    """An `expect` entry resolved against the config: the route and destination its key names."""

    key: str
    route: str
    destination: str
    request: ExpectedRequest


@dataclass(frozen=True)
class CaseResult:
    name: str
    failures: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.failures


def load_cases(
    file: str | Path, config: LoadedConfig, default_source: str | None = None, environ: Mapping[str, str] | None = None
) -> list[LoadedCase]:
    """Read and check a cases file against `config`; raise ConfigError (path and line) listing every problem."""
    path = Path(file)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "the file is not UTF-8 text"
        raise ConfigError(str(path), [ConfigProblem("", f"cannot read the cases file: {reason}")]) from None
    document = read_yaml(text, environ)
    problems = list(document.problems)
    cases: list[LoadedCase] = []
    if not problems:
        parsed = _validate(document.data, problems)
        for index, spec in enumerate(parsed.cases if parsed else []):
            loaded = _load_case(spec, f"cases[{index}]", path.parent, config, default_source, problems)
            if loaded is not None:
                cases.append(loaded)
    if problems:
        located = [ConfigProblem(p.path, p.message, p.line or document.line_of(p.path), p.hint) for p in problems]
        raise ConfigError(str(path), located)
    return cases


def _validate(data: Any, problems: list[ConfigProblem]) -> CasesFile | None:
    if not isinstance(data, dict):
        problems.append(ConfigProblem("", "a cases file is a mapping with a list under 'cases'", 1))
        return None
    try:
        return CasesFile.model_validate(data)
    except pydantic.ValidationError as exc:
        known = {alias for model in (CasesFile, Case, EarlierPayload, ExpectedRequest) for alias in model.model_fields}
        for error in exc.errors():
            at = ""
            for part in error["loc"]:
                at = join_path(at, part)
            if error["type"] == "extra_forbidden":
                problems.append(ConfigProblem(at, f"unknown key '{error['loc'][-1]}'",
                                              hint=_guess(str(error["loc"][-1]), known)))
            else:
                problems.append(ConfigProblem(at, str(error["msg"]).removeprefix("Value error, ")))
        return None


def _load_case(
    spec: Case, at: str, base_dir: Path, config: LoadedConfig, default_source: str | None,
    problems: list[ConfigProblem],
) -> LoadedCase | None:
    found = len(problems)
    try:
        source = pick_source(config, spec.source or default_source)
    except GatewayError as exc:
        problems.append(ConfigProblem(f"{at}.source", str(exc)))
        return None
    routes = {route.name: route for route in config.routes_for(source)}
    for key in ("routes", "matched", "not_matched"):
        for index, name in enumerate(getattr(spec, key) or []):
            if name not in routes:
                problems.append(ConfigProblem(f"{at}.{key}[{index}]", f"no route '{name}' for source '{source}'",
                                              hint=_guess(name, routes)))
    sends = {f"{route.name}/{send.destination}": (route.name, send.destination)
             for route in routes.values() for send in route.sends}
    expectations = []
    for key, expected in spec.expect.items():
        where = join_path(f"{at}.expect", key)
        if key in sends:
            expectations.append(Expectation(key, *sends[key], expected))
        else:
            problems.append(ConfigProblem(where, f"no route sends '{key}' (keys are '<route>/<destination>')",
                                          hint=_guess(key, sends)))
        for expr in expected.body_paths:
            try:
                compile_path(expr)
            except ValueError as exc:
                problems.append(ConfigProblem(f"{where}.body_paths", str(exc)))
    steps = {send.step for route in routes.values() for send in route.sends if send.step is not None}
    for step in spec.step_responses:
        if step not in steps:
            problems.append(ConfigProblem(join_path(f"{at}.step_responses", step),
                                          f"no request of source '{source}' has id '{step}'", hint=_guess(step, steps)))
    answers = {step: sample_answer(value.encode() if isinstance(value, str) else json.dumps(value).encode())
               for step, value in spec.step_responses.items()}
    body = _payload_bytes(spec, at, base_dir, problems)
    previous = [_payload_bytes(earlier, f"{at}.previous[{index}]", base_dir, problems)
                for index, earlier in enumerate(spec.previous)]  # fmt: skip
    if body is None or len(problems) > found:
        return None
    earlier = tuple(item for item in previous if item is not None)
    return LoadedCase(spec.name or spec.payload_file or at, source, body, spec, earlier, tuple(expectations), answers)


def _payload_bytes(
    spec: Case | EarlierPayload, at: str, base_dir: Path, problems: list[ConfigProblem]
) -> bytes | None:
    if spec.payload_file is None:
        return json.dumps(spec.payload, ensure_ascii=False).encode()
    file = base_dir / spec.payload_file
    try:
        return file.read_bytes()
    except OSError as exc:
        problems.append(ConfigProblem(f"{at}.payload_file", f"cannot read {file}: {exc.strerror}",
                                      hint="paths are relative to the cases file"))
        return None


def _guess(name: str, known: Iterable[str]) -> str | None:
    options = sorted(known)
    guess = difflib.get_close_matches(name, options, n=1)
    if guess:
        return f"did you mean '{guess[0]}'?"
    return f"known: {', '.join(options)}" if options else None


# --- running -------------------------------------------------------------------------------------------------------


def run_cases(config: LoadedConfig, cases: list[LoadedCase]) -> list[CaseResult]:
    return [run_case(config, case) for case in cases]


def run_case(config: LoadedConfig, case: LoadedCase) -> CaseResult:
    """Route the case's payload through the dry run and compare what it shows with what the case expects."""
    try:
        report = route_in_turn(config, [*case.previous, case.body], case.source, case.answers).report
    except GatewayError as exc:
        return CaseResult(case.name, (f"cannot route the payload: {config.masker.text(str(exc))}",))
    verdicts = {verdict["route"]: verdict for verdict in report["routes"]}
    failures = [*_route_failures(case.spec, verdicts, report["validation_request"])]
    for expectation in case.expect:
        failures.extend(_request_failures(config.masker, expectation, verdicts, report["validation_request"]))
    # A route the case says matches must also render; other routes may meet a payload trimmed to this case's point.
    claimed = {*(case.spec.routes or ()), *case.spec.matched, *(expectation.route for expectation in case.expect)}
    for verdict in verdicts.values():
        failures.extend(
            f"{verdict['route']}/{send['to']} cannot render: {send['error']}"
            for send in verdict["sends"] if "error" in send and verdict["route"] in claimed
        )
    return CaseResult(case.name, tuple(dict.fromkeys(failures)))


def _route_failures(spec: Case, verdicts: dict[str, Any], validation: bool) -> Iterator[str]:
    matched = [name for name, verdict in verdicts.items() if verdict["matched"]]
    if spec.routes is not None and set(spec.routes) != set(matched):
        yield f"routes: expected {_names(sorted(spec.routes))}, got {_names(matched)}"
        yield from (_why_not(name, verdicts, validation) for name in spec.routes if name not in matched)
    yield from (_why_not(name, verdicts, validation) for name in spec.matched if name not in matched)
    yield from (f"{name} matched, expected it not to" for name in spec.not_matched if name in matched)


def _why_not(route: str, verdicts: dict[str, Any], validation: bool) -> str:
    if validation:
        return f"{route} did not match: the payload has no 'rule' (a validation request), nothing is routed"
    return f"{route} did not match: {verdicts[route]['failed']}"


def _request_failures(
    masker: Masker, expectation: Expectation, verdicts: dict[str, Any], validation: bool
) -> Iterator[str]:
    verdict = verdicts.get(expectation.route)
    if verdict is None or not verdict["matched"]:
        yield _why_not(expectation.route, verdicts, validation)
        return
    waiting = [send["waiting_on"] for send in verdict["sends"]
               if send["to"] == expectation.destination and "waiting_on" in send]
    yield from (f"{expectation.key} waits for step {step}: give the case step_responses.{step}" for step in waiting)
    sends = [send for send in verdict["sends"] if send["to"] == expectation.destination and "request" in send]
    for number, send in enumerate(sends, start=1):
        label = expectation.key if len(sends) == 1 else f"{expectation.key} (request {number})"
        yield from (f"{label}: {problem}" for problem in compare_request(masker, expectation.request, send["request"]))


def _names(names: list[str]) -> str:
    return f"[{', '.join(names)}]"


# --- reporting -----------------------------------------------------------------------------------------------------


def format_results(results: list[CaseResult]) -> str:
    """One PASS/FAIL line per case (a failure gives its reasons on the same line), then a total."""
    lines = [
        f"PASS  {result.name}" if result.passed else f"FAIL  {result.name}: {'; '.join(result.failures)}"
        for result in results
    ]
    failed = sum(not result.passed for result in results)
    lines.append(f"{plural(len(results), 'case')}: {len(results) - failed} passed, {failed} failed")
    return "\n".join(lines)


def results_document(results: list[CaseResult]) -> dict[str, Any]:
    """The results as JSON-ready data, for `--json`."""
    failed = sum(not result.passed for result in results)
    return {
        "passed": len(results) - failed,
        "failed": failed,
        "cases": [{"name": r.name, "passed": r.passed, "failures": list(r.failures)} for r in results],
    }
