"""Trial descriptions: load, validate and expose one trial's YAML as typed objects.

A trial is described by one YAML file (``config/trials/<name>.yaml``). Validation runs in two
steps: the JSON schema in ``workflow/schemas/trial.schema.yaml`` checks types and fills
defaults, then :func:`parse_trial` checks what a schema cannot express (the primary visit is
one of the visits, ranges are ordered, names are unique, ...). Every failure is a
:class:`~trialflow.errors.ConfigError` naming the file and the key.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trialflow.errors import ConfigError

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
# Column names of the analysis datasets; an outcome may not take one of them as its name.
RESERVED_NAMES: frozenset[str] = frozenset(
    {
        "subject_id", "arm", "visit", "visit_index", "week", "source_row", "outcome", "value",
        "baseline", "change", "pct_change", "ablfl", "anl01fl", "itt", "has_baseline",
        "n_visits", "last_visit", "last_week", "completed", "withdrawn", "withdrawal_reason",
        "per_protocol",
    }
)  # fmt: skip
TRIAL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
# The schemas are ours, not user input: the C loader reads them fast.
_FastLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
TRIAL_SCHEMA = SCHEMA_DIR / "trial.schema.yaml"
WORKFLOW_SCHEMA = SCHEMA_DIR / "config.schema.yaml"


@dataclass(frozen=True)
class Visit:
    """A scheduled visit: its label in the data, planned week and 0-based position."""

    label: str
    week: float
    index: int
    name: str = ""  # what readers see ("" before parsing fills it)


@dataclass(frozen=True)
class Covariate:
    """An adjustment covariate: its column in the subjects file and optional declared type."""

    name: str
    type: str | None = None
    levels: Mapping[str, str] = field(default_factory=dict)  # display label per level


@dataclass(frozen=True)
class Outcome:
    """One outcome measured at the visits."""

    name: str
    column: str
    label: str
    unit: str
    range_min: float
    range_max: float
    better: str
    domain: str = "other"
    primary: bool = False
    decimals: int = 1


@dataclass(frozen=True)
class SdtmTest:
    """The findings test an outcome is read from: SDTM domain (QS, VS, LB) and test code."""

    outcome: str
    domain: str
    testcd: str


@dataclass(frozen=True)
class SdtmSource:
    """A trial's CDISC SDTM input (``data.format: sdtm``; see :mod:`trialflow.sdtm`)."""

    dm: str
    findings: tuple[str, ...]
    tests: tuple[SdtmTest, ...]
    # SDTM VISIT (or VISITNUM) -> visit label, None for a visit not analysed; empty: the
    # VISIT is the visit label.
    visit_labels: Mapping[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class TrialConfig:
    """A validated trial description."""

    name: str
    title: str
    source: str
    subjects_path: str
    visits_path: str
    subject_id_column: str
    arm_column: str
    visit_column: str
    control: str
    treatment: str
    visits: tuple[Visit, ...]
    baseline_visit: str
    primary_visit: str
    covariates: tuple[Covariate, ...]
    outcomes: tuple[Outcome, ...]
    subjects_sheet: str | None = None
    visits_sheet: str | None = None
    visits_layout: str = "long"  # or "wide": one row per subject (see trialflow.wide)
    wide_columns: str = "{outcome}_{visit}"
    adverse_events_path: str | None = None
    screening_path: str | None = None
    # "redcap": one REDCap export (subjects_path = visits_path = the records; trialflow.redcap)
    data_format: str = "tables"
    dictionary_path: str | None = None
    withdrawal_reason_column: str | None = None
    sdtm: SdtmSource | None = None  # data.format: sdtm
    missing_values: tuple[str, ...] = ()
    drop_columns: tuple[str, ...] = ()
    description: str = ""
    analysis: Mapping[str, Any] = field(default_factory=dict)
    sensitivity: Mapping[str, Any] = field(default_factory=dict)
    estimand: Mapping[str, Any] = field(default_factory=dict)
    arm_labels: Mapping[str, str] = field(default_factory=dict)  # display label per arm
    raw: Mapping[str, Any] = field(default_factory=dict)

    @property
    def arms(self) -> tuple[str, str]:
        """Arm labels, control first."""
        return (self.control, self.treatment)

    @property
    def visit_labels(self) -> tuple[str, ...]:
        return tuple(v.label for v in self.visits)

    @property
    def post_baseline_visits(self) -> tuple[Visit, ...]:
        base = self.visit(self.baseline_visit).index
        return tuple(v for v in self.visits if v.index > base)

    @property
    def final_visit(self) -> str:
        return self.visits[-1].label

    @property
    def primary_outcomes(self) -> tuple[Outcome, ...]:
        return tuple(o for o in self.outcomes if o.primary)

    @property
    def options(self) -> dict[str, Any]:
        """Analysis options (``analysis:`` in the trial description) with their defaults."""
        opts = dict(self.analysis)
        return {
            "covariance": opts.get("covariance", "us"),
            "fallback": tuple(opts.get("fallback", ("toep", "ar1", "cs"))),
            "random_slope": bool(opts.get("random_slope", False)),
            "alpha": float(opts.get("alpha", 0.05)),
            "primary_adjustment": opts.get("primary_adjustment", "holm"),
            "response": opts.get("response", "change"),
            "baseline": opts.get("baseline", "main"),
            "covariates_by_visit": tuple(opts.get("covariates_by_visit", ())),
            "lsmeans_weights": opts.get("lsmeans_weights", "equal"),
            "df": opts.get("df", "satterthwaite"),
            "subgroups": tuple(
                {"name": g, "cut": []} if isinstance(g, str) else dict(g)
                for g in opts.get("subgroups", ())
            ),
        }

    def visit(self, label: str) -> Visit:
        for v in self.visits:
            if v.label == label:
                return v
        raise KeyError(label)

    def outcome(self, name: str) -> Outcome:
        for o in self.outcomes:
            if o.name == name:
                return o
        raise KeyError(name)


def closest(word: str, choices: Sequence[str]) -> str | None:
    """The closest of ``choices`` to ``word`` (case-insensitive), or None if nothing is close."""
    lowered = {c.lower(): c for c in choices}
    match = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.5)
    return lowered[match[0]] if match else None


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """A short hint naming the closest choice, or the list of choices."""
    best = closest(word, choices)
    if best is not None:
        return f"did you mean {best!r}?"
    return "known: " + ", ".join(repr(c) for c in choices)


# Deeper nesting than any trial description needs is refused before it can exhaust the stack.
MAX_YAML_DEPTH = 32


class _StrictLoader(yaml.SafeLoader):
    """YAML for trial descriptions: no aliases, no duplicated keys, bounded nesting.

    Aliases are refused because a few lines of them can expand to gigabytes ("billion laughs");
    a duplicated key would otherwise silently keep its last value.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _YamlProblem(
                "uses a YAML alias (*name); aliases are not allowed in trial descriptions",
                event.start_mark.line + 1,
                "write the value out in full where the alias is",
            )
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            mark = self.peek_event().start_mark
            raise _YamlProblem(
                f"is nested more than {MAX_YAML_DEPTH} levels deep",
                mark.line + 1,
                "a trial description needs only a few levels; check the indentation",
            )
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise _YamlProblem(
                    f"has the key {key!r} twice (lines {seen[key]} and {line})",
                    line,
                    "keep one of them",
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


class _YamlProblem(Exception):
    def __init__(self, message: str, line: int, fix: str) -> None:
        super().__init__(message)
        self.message, self.line, self.fix = message, line, fix


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping strictly; every problem is a ConfigError naming the line."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            "trial description not found",
            file=str(p),
            fix="create it (see config/README.md) or correct the name in config/config.yaml",
        )
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"is not UTF-8 text (byte {raw[exc.start]:#04x})",
            file=str(p),
            row=raw[: exc.start].count(b"\n") + 1,
            fix="save the trial description as UTF-8",
        ) from None
    try:
        content = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except _YamlProblem as exc:
        raise ConfigError(exc.message, file=str(p), row=exc.line, fix=exc.fix) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        row = mark.line + 1 if mark is not None else None
        raise ConfigError(
            f"not valid YAML ({getattr(exc, 'problem', exc)})",
            file=str(p),
            row=row,
            fix="correct the YAML syntax at that line",
        ) from None
    if not isinstance(content, dict):
        raise ConfigError("must be a YAML mapping of keys to values", file=str(p))
    return content


def _key_path(parts: Sequence[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


@functools.lru_cache(maxsize=4)
def _validator(schema_path: Path) -> Any:
    """A JSON-schema validator that fills in defaults, built once per schema file."""
    import copy

    import jsonschema

    schema = yaml.load(schema_path.read_text(encoding="utf-8"), Loader=_FastLoader)
    base = jsonschema.Draft202012Validator

    def set_defaults(validator: Any, properties: Any, instance: Any, schema: Any) -> Any:
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub and prop not in instance:
                    instance[prop] = copy.deepcopy(sub["default"])
        yield from base.VALIDATORS["properties"](validator, properties, instance, schema)

    return jsonschema.validators.extend(base, {"properties": set_defaults})(schema)


def validate_schema(content: dict[str, Any], schema_path: Path, *, source: str) -> dict[str, Any]:
    """Validate ``content`` against a JSON schema and fill in defaults (returns a new dict)."""
    import copy

    validator = _validator(Path(schema_path))
    filled = copy.deepcopy(content)
    errors = sorted(validator.iter_errors(filled), key=lambda e: list(e.path))
    if errors:
        err = errors[0]
        key = _key_path(list(err.absolute_path))
        message = err.message
        if err.validator == "additionalProperties":
            allowed = list((err.schema or {}).get("properties", {}))
            extra = [k for k in err.instance if k not in allowed]
            hints = "; ".join(f"{k!r}: {did_you_mean(k, allowed)}" for k in extra)
            message = f"unknown key(s) {', '.join(map(repr, extra))} ({hints})"
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise ConfigError(
            f"key {key}: {message}{more}",
            file=source,
            fix="correct the key as documented in config/README.md",
        )
    return filled


def parse_trial(content: Mapping[str, Any], *, name: str, source: str) -> TrialConfig:
    """Check a schema-validated trial mapping for consistency and build a :class:`TrialConfig`."""

    def fail(key: str, message: str, fix: str) -> ConfigError:
        return ConfigError(f"key {key}: {message}", file=source, fix=fix)

    columns = {"subject_id": "subject_id", "arm": "arm", "visit": "visit"}
    columns.update(content.get("columns") or {})
    arms = content["arms"]
    if arms["control"].strip() == arms["treatment"].strip():
        raise fail("arms", "control and treatment have the same label", "give two distinct labels")

    visits: list[Visit] = []
    seen: set[str] = set()
    for i, v in enumerate(content["visits"]):
        label = str(v["label"]).strip()
        if label in seen:
            raise fail(f"visits[{i}]", f"visit {label!r} is listed twice", "list each visit once")
        if visits and float(v["week"]) <= visits[-1].week:
            raise fail(
                f"visits[{i}]",
                f"week {v['week']} of {label!r} is not after week {visits[-1].week}",
                "list visits in time order with increasing weeks",
            )
        seen.add(label)
        shown = v.get("name") or (
            "Baseline" if label == content["baseline_visit"] else f"Week {float(v['week']):g}"
        )
        visits.append(Visit(label=label, week=float(v["week"]), index=i, name=str(shown)))
    labels = [v.label for v in visits]
    for key in ("baseline_visit", "primary_visit"):
        if content[key] not in labels:
            raise fail(
                key,
                f"{content[key]!r} is not one of the visits ({did_you_mean(content[key], labels)})",
                "use a label from the visits list",
            )
    base_index = labels.index(content["baseline_visit"])
    if labels.index(content["primary_visit"]) <= base_index:
        raise fail(
            "primary_visit", "must come after the baseline visit", "choose a post-baseline visit"
        )

    outcomes: list[Outcome] = []
    for i, o in enumerate(content["outcomes"]):
        lo, hi = (float(x) for x in o["range"])
        if not lo < hi:
            raise fail(
                f"outcomes[{i}].range", f"min {lo:g} is not below max {hi:g}", "write [min, max]"
            )
        span = hi - lo
        default_decimals = 0 if span >= 100 else (1 if span >= 5 else 2)
        outcomes.append(
            Outcome(
                name=o["name"],
                column=o.get("column", o["name"]),
                label=o["label"],
                unit=o["unit"],
                range_min=lo,
                range_max=hi,
                better=o["better"],
                domain=o.get("domain", "other"),
                primary=bool(o.get("primary", False)),
                decimals=int(o.get("decimals", default_decimals)),
            )
        )
    for i, o in enumerate(outcomes):
        if o.name.lower() in RESERVED_NAMES:
            raise fail(
                f"outcomes[{i}].name",
                f"{o.name!r} is the name of a column of the analysis datasets",
                f"call the outcome something else (e.g. {o.name}_score) and keep the file's "
                f"column with column: {o.column!r}",
            )
    for attr in ("name", "column"):
        values = [getattr(o, attr) for o in outcomes]
        dupes = sorted({v for v in values if values.count(v) > 1})
        if dupes:
            raise fail("outcomes", f"outcome {attr} {dupes[0]!r} is used twice", "make it unique")
    if not any(o.primary for o in outcomes):
        raise fail("outcomes", "no outcome is marked primary: true", "mark the primary outcome(s)")

    covariates: list[Covariate] = []
    for c in content.get("covariates") or []:
        cov = (
            Covariate(name=c)
            if isinstance(c, str)
            else Covariate(c["name"], c.get("type"), dict(c.get("levels") or {}))
        )
        if cov.name in {x.name for x in covariates}:
            raise fail("covariates", f"{cov.name!r} is listed twice", "list each covariate once")
        if cov.name in (columns["subject_id"], columns["arm"]):
            raise fail(
                "covariates",
                f"{cov.name!r} is the subject or arm column",
                "the arm is always in the model; list only baseline characteristics",
            )
        if cov.name.lower() in RESERVED_NAMES:
            raise fail(
                "covariates",
                f"{cov.name!r} is the name of a column of the analysis datasets (ADSL, ADEFF)",
                f"rename the column in the subjects file (e.g. {cov.name}_at_entry) and list "
                "that name",
            )
        covariates.append(cov)

    n_post = len(visits) - 1 - base_index
    _check_analysis(content.get("analysis") or {}, covariates, n_post, labels, fail)
    post_labels = labels[base_index + 1 :]
    _check_sensitivity(content.get("sensitivity") or {}, [o.name for o in outcomes], fail)
    _check_estimand(content.get("estimand") or {}, [o.name for o in outcomes], post_labels, fail)
    data = content["data"]
    _check_layout(data, fail)
    redcap = data.get("format") == "redcap"
    if redcap:
        _check_redcap(data, labels, fail)
        columns["arm"] = data["randomisation"]["field"]
    for key in ("records", "dictionary", "events", "randomisation"):
        if key in data and not redcap:
            raise fail(f"data.{key}", "is a key of REDCap exports", "add format: redcap")
    sdtm = _sdtm_source(data, [o.name for o in outcomes], labels, fail)
    return TrialConfig(
        name=name,
        title=content["title"],
        source=source,
        subjects_path=data["records"] if redcap else (sdtm.dm if sdtm else data["subjects"]),
        visits_path=data["records"] if redcap else (sdtm.findings[0] if sdtm else data["visits"]),
        data_format=data.get("format", "tables"),
        dictionary_path=data.get("dictionary"),
        sdtm=sdtm,
        subjects_sheet=data.get("subjects_sheet"),
        visits_sheet=data.get("visits_sheet"),
        visits_layout=data.get("layout", "long"),
        wide_columns=data.get("wide_columns", "{outcome}_{visit}"),
        adverse_events_path=data.get("adverse_events"),
        screening_path=data.get("screening"),
        missing_values=tuple(str(x) for x in data.get("missing_values", [])),
        withdrawal_reason_column=columns.get("withdrawal_reason"),
        subject_id_column=columns["subject_id"],
        arm_column=columns["arm"],
        visit_column=columns["visit"],
        drop_columns=tuple(content.get("drop_columns") or ()),
        control=arms["control"].strip(),
        treatment=arms["treatment"].strip(),
        visits=tuple(visits),
        baseline_visit=content["baseline_visit"],
        primary_visit=content["primary_visit"],
        covariates=tuple(covariates),
        outcomes=tuple(outcomes),
        description=content.get("description", ""),
        analysis=dict(content.get("analysis") or {}),
        sensitivity=dict(content.get("sensitivity") or {}),
        estimand=dict(content.get("estimand") or {}),
        arm_labels={str(k).strip(): str(v) for k, v in (arms.get("labels") or {}).items()},
        raw=dict(content),
    )


def _check_layout(data: Mapping[str, Any], fail: Callable[[str, str, str], ConfigError]) -> None:
    """A wide layout's column pattern names each of {outcome} and {visit} exactly once."""
    pattern = data.get("wide_columns")
    if pattern is None:
        return
    if data.get("layout", "long") != "wide":
        raise fail(
            "data.wide_columns",
            "is given but data.layout is long (one row per subject and visit)",
            "add layout: wide under data:, or remove wide_columns",
        )
    for placeholder in ("{outcome}", "{visit}"):
        if pattern.count(placeholder) != 1:
            raise fail(
                "data.wide_columns",
                f"{pattern!r} must contain {placeholder} exactly once "
                f"(it has it {pattern.count(placeholder)} times)",
                'name the columns with both placeholders, e.g. "{outcome}_{visit}" for pain_week12',
            )


def _check_redcap(
    data: Mapping[str, Any], labels: Sequence[str], fail: Callable[[str, str, str], ConfigError]
) -> None:
    """A REDCap export maps events to the trial's visits (several events may be one visit:
    ``baseline_arm_1`` and ``baseline_arm_2`` of a project with REDCap arms)."""
    tables_keys = ("subjects", "visits", "subjects_sheet", "visits_sheet", "wide_columns")
    for key in tables_keys:
        if key in data:
            raise fail(
                f"data.{key}",
                "is given with format: redcap (the records export holds subjects and visits)",
                f"remove {key}, or remove format: redcap to read a subjects and a visits file",
            )
    if data.get("layout", "long") != "long":
        raise fail("data.layout", "a REDCap export is never wide", "remove layout")
    for event, label in data["events"].items():
        if label not in labels:
            raise fail(
                f"data.events.{event}",
                f"{label!r} is not one of the visits ({did_you_mean(label, labels)})",
                "map each event to a label from the visits list",
            )


_SDTM_KEYS = ("dm", "findings", "tests", "visit_labels")
_TABLE_KEYS = ("subjects", "visits", "wide_columns", "subjects_sheet", "visits_sheet")


def _check_tests(
    tests: Mapping[str, Any], outcomes: Sequence[str], fail: Callable[[str, str, str], ConfigError]
) -> None:
    """data.tests names every outcome once and reads each from a test of its own."""
    for name in tests:
        if name not in outcomes:
            raise fail(
                f"data.tests.{name}",
                f"{name!r} is not an outcome ({did_you_mean(name, outcomes)})",
                "use the outcomes' names as keys",
            )
    missing = [o for o in outcomes if o not in tests]
    if missing:
        raise fail(
            "data.tests",
            f"no test for outcome(s) {', '.join(map(repr, missing))}",
            "give each outcome its domain and test code, e.g. {domain: QS, testcd: PAINVAS}",
        )
    seen: dict[tuple[str, str], str] = {}
    for name, test in tests.items():
        code = (test["domain"].upper(), test["testcd"].strip().upper())
        if code in seen:
            raise fail(
                f"data.tests.{name}",
                f"{name!r} and {seen[code]!r} are both read from {code[0]} test {code[1]!r}",
                "give each outcome its own test code",
            )
        seen[code] = name


def _sdtm_source(
    data: Mapping[str, Any],
    outcomes: Sequence[str],
    labels: Sequence[str],
    fail: Callable[[str, str, str], ConfigError],
) -> SdtmSource | None:
    """The SDTM input of ``data.format: sdtm``: every outcome read from one test, every
    visit label one of the visits; None for other formats."""
    if data.get("format", "tables") != "sdtm":
        for key in _SDTM_KEYS:
            if key in data:
                raise fail(f"data.{key}", "is an SDTM key", "add format: sdtm under data:")
        return None
    for key in (*_TABLE_KEYS, "screening"):
        if key in data:
            raise fail(
                f"data.{key}",
                "is not read with format: sdtm (DM gives the subjects and those screened, the "
                "findings domains the visits)",
                f"remove {key}",
            )
    tests = data["tests"]
    _check_tests(tests, outcomes, fail)
    visit_labels = {str(k).strip(): v for k, v in (data.get("visit_labels") or {}).items()}
    for visit, label in visit_labels.items():
        if label is not None and label not in labels:
            raise fail(
                f"data.visit_labels.{visit}",
                f"{label!r} is not one of the visits ({did_you_mean(label, labels)})",
                "map each SDTM visit to a label of visits:, or to null to leave it out",
            )
    return SdtmSource(
        dm=data["dm"],
        findings=tuple(data["findings"]),
        tests=tuple(
            SdtmTest(o, tests[o]["domain"].upper(), tests[o]["testcd"].strip()) for o in outcomes
        ),
        visit_labels=visit_labels,
    )


def _check_analysis(
    analysis: Mapping[str, Any],
    covariates: Sequence[Covariate],
    n_post: int,
    labels: Sequence[str],
    fail: Callable[[str, str, str], ConfigError],
) -> None:
    """Combinations of analysis options that cannot be fitted stop here, naming the key."""
    names = [c.name for c in covariates]
    for key in ("covariates_by_visit",):
        for name in analysis.get(key, []):
            if name not in names:
                raise fail(
                    f"analysis.{key}",
                    f"{name!r} is not one of the covariates ({', '.join(names) or 'none'})",
                    "add it to covariates, or remove it from covariates_by_visit",
                )
    for i, group in enumerate(analysis.get("subgroups", [])):
        _check_subgroup(group, f"analysis.subgroups[{i}]", fail)
        name = group if isinstance(group, str) else group["name"]
        if name not in names:
            raise fail(
                f"analysis.subgroups[{i}]",
                f"{name!r} is not one of the covariates ({', '.join(names) or 'none'})",
                "list the subgroup variable under covariates as well",
            )
    base = analysis.get("baseline", "main")
    if n_post < 2 and (base == "by_visit" or analysis.get("covariates_by_visit")):
        key = "baseline" if base == "by_visit" else "covariates_by_visit"
        raise fail(
            f"analysis.{key}",
            f"an interaction with visit needs at least two post-baseline visits "
            f"(visits: {', '.join(labels)})",
            "use baseline: main and no covariates_by_visit with a single follow-up visit",
        )


def _check_sensitivity(
    sensitivity: Mapping[str, Any],
    outcomes: Sequence[str],
    fail: Callable[[str, str, str], ConfigError],
) -> None:
    """Outcome names under responders and tipping_point.deltas, and one per-protocol rule."""
    keyed = [
        ("sensitivity.responders", sensitivity.get("responders") or {}),
        (
            "sensitivity.tipping_point.deltas",
            (sensitivity.get("tipping_point") or {}).get("deltas") or {},
        ),
    ]
    for key, mapping in keyed:
        for name in mapping:
            if name not in outcomes:
                raise fail(
                    f"{key}.{name}",
                    f"{name!r} is not an outcome ({did_you_mean(name, outcomes)})",
                    "use the name: of an outcome",
                )
    rule = sensitivity.get("per_protocol")
    if rule is not None and ("include" in rule) == ("exclude" in rule):
        raise fail(
            "sensitivity.per_protocol",
            "give exactly one of include or exclude",
            "e.g. {column: Adherent, include: [yes]} or {column: Deviation, exclude: [major]}",
        )


def _check_estimand(
    estimand: Mapping[str, Any],
    outcomes: Sequence[str],
    post_visits: Sequence[str],
    fail: Callable[[str, str, str], ConfigError],
) -> None:
    """The estimand's variable names an outcome and a post-baseline visit."""
    variable = estimand.get("variable") or {}
    for key, value, known in (
        ("outcome", variable.get("outcome"), outcomes),
        ("visit", variable.get("visit"), post_visits),
    ):
        if value is not None and value not in known:
            raise fail(
                f"estimand.variable.{key}",
                f"{value!r} is not one of {', '.join(map(repr, known))}",
                f"name a{'n' if key == 'outcome' else ' post-baseline'} {key} of the trial",
            )


def _check_subgroup(group: Any, key: str, fail: Callable[[str, str, str], ConfigError]) -> None:
    """A subgroup is a covariate's name, or {name, cut} with a list of numeric cut points."""
    if isinstance(group, str):
        return
    cut = group.get("cut") if isinstance(group, dict) else None
    numbers = (
        isinstance(cut, list)
        and cut
        and all(isinstance(c, int | float) and not isinstance(c, bool) for c in cut)
    )
    if set(group) != {"name", "cut"} or not isinstance(group.get("name"), str) or not numbers:
        raise fail(
            key,
            f"{group!r} is not a subgroup",
            "write a categorical covariate's name (sex), or a numeric covariate with its cut "
            "points ({name: age, cut: [65]})",
        )


def load_trial(path: str | Path, *, name: str | None = None) -> TrialConfig:
    """Load, validate and parse one trial description.

    Parameters
    ----------
    path
        The YAML file, usually ``config/trials/<name>.yaml``.
    name
        Trial name used for output folders; defaults to the file name without extension.
    """
    p = Path(path)
    content = validate_schema(load_yaml(p), TRIAL_SCHEMA, source=str(p))
    return parse_trial(content, name=name or p.stem, source=str(p))


def trial_names(value: str | Sequence[str]) -> list[str]:
    """Trials to run from config: a list, or a comma-separated string from the command line."""
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    names = [i.strip() for i in items if i.strip()]
    if not names:
        raise ConfigError("no trial to run", fix="set trials: [<name>] in config/config.yaml")
    for name in names:
        if not TRIAL_NAME.fullmatch(name):
            raise ConfigError(
                f"trial name {name!r} is not allowed: use letters, digits, _ and - only",
                file="config/config.yaml",
                fix="name the trial description config/trials/<name>.yaml with such a name",
            )
    return list(dict.fromkeys(names))
