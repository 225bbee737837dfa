"""Loading PNML and BPMN models: markings, where the final marking came from, and errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from procvault.config.models import LoadedModel, load_model
from procvault.monitor.errors import ConfigError, InputError

MODELS = Path("/work/shared/data/models")
SEPSIS_PNML = MODELS / "promtee/pnml/sepsis.pnml"
SEPSIS_BPMN = MODELS / "promtee/bpmn/sepsis.bpmn"
RUNNING_PNML = MODELS / "pm4py/running-example.pnml"
RUNNING_BPMN = MODELS / "pm4py/running-example.bpmn"
ROADTRAFFIC = MODELS / "pm4py/roadtraffic.pnml"
WOPED = MODELS / "promtee/pnml/bpic2012top10alpha.pnml"

pytestmark = pytest.mark.skipif(not MODELS.is_dir(), reason="shared models are not available")


def marked(marking: object) -> dict[str, int]:
    """A pm4py marking as ``{place id: tokens}``."""
    return {place.name: tokens for place, tokens in marking.items()}  # type: ignore[attr-defined]


def pnml(
    tmp_path: Path,
    *,
    arcs: str = '<arc id="a1" source="start" target="t"/><arc id="a2" source="t" target="end"/>',
    places: str = "",
    final: str | None = None,
    name: str = "net.pnml",
) -> Path:
    """Write a one-transition PNML net (start -> t "A" -> end) and return its path."""
    final_xml = "" if final is None else f"<finalmarkings>{final}</finalmarkings>"
    text = f"""<?xml version="1.0" encoding="UTF-8"?>
<pnml><net id="net" type="http://www.pnml.org/version-2009/grammar/pnmlcoremodel">
<page id="page">
  <place id="start"><name><text>Start</text></name>
    <initialMarking><text>1</text></initialMarking></place>
  <place id="end"><name><text>End</text></name></place>
  {places}
  <transition id="t"><name><text>A</text></name></transition>
  {arcs}
</page>{final_xml}</net></pnml>"""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("path", "source", "final"),
    [
        (SEPSIS_PNML, "sink place", {"n17": 1}),
        (RUNNING_PNML, "file", {"n2": 1}),
        (ROADTRAFFIC, "file", {"sink": 1}),
        (SEPSIS_BPMN, "file", {"sink": 1}),
        (RUNNING_BPMN, "file", {"sink": 1}),
        (WOPED, "sink place", {"n14": 1}),
    ],
    ids=lambda v: v.name if isinstance(v, Path) else None,
)
def test_shared_models_load(path: Path, source: str, final: dict[str, int]) -> None:
    model = load_model(path)
    assert isinstance(model, LoadedModel)
    assert model.path == path
    assert model.final_marking_source == source
    assert marked(model.final_marking) == final
    assert model.initial_marking
    assert model.visible_labels


def test_sepsis_labels_are_the_sepsis_activities() -> None:
    pnml_labels = load_model(SEPSIS_PNML).visible_labels
    assert len(pnml_labels) == 16
    assert "ER Sepsis Triage" in pnml_labels
    assert load_model(SEPSIS_BPMN).visible_labels == pnml_labels


def test_roadtraffic_has_silent_transitions() -> None:
    model = load_model(ROADTRAFFIC)
    silent = [t for t in model.net.transitions if t.label is None]
    assert len(silent) == 23
    assert len(model.visible_labels) == 11


@pytest.mark.parametrize("place", ["n17", "o"])
def test_final_marking_option_by_id_or_name(place: str) -> None:
    model = load_model(SEPSIS_PNML, final_marking=place)
    assert model.final_marking_source == "option"
    assert marked(model.final_marking) == {"n17": 1}


def test_final_marking_option_replaces_the_files(tmp_path: Path) -> None:
    path = pnml(
        tmp_path,
        places='<place id="other"/>',
        arcs='<arc id="a1" source="start" target="t"/><arc id="a2" source="t" target="end"/>'
        '<arc id="a3" source="t" target="other"/>',
        final='<marking><place idref="end"><text>1</text></place></marking>',
    )
    assert load_model(path).final_marking_source == "file"
    model = load_model(path, final_marking="other")
    assert (model.final_marking_source, marked(model.final_marking)) == ("option", {"other": 1})


def test_unknown_final_marking_place() -> None:
    with pytest.raises(ConfigError, match=r"sepsis\.pnml: final_marking 'nowhere' is neither"):
        load_model(SEPSIS_PNML, final_marking="nowhere")


def test_ambiguous_final_marking_name(tmp_path: Path) -> None:
    places = "".join(f'<place id="x{i}"><name><text>X</text></name></place>' for i in (1, 2))
    with pytest.raises(ConfigError, match=r"'X' names 2 places \(x1, x2\); use a place id"):
        load_model(pnml(tmp_path, places=places), final_marking="X")


def test_empty_final_marking_uses_the_sink_place(tmp_path: Path) -> None:
    model = load_model(pnml(tmp_path, final=""))
    assert model.final_marking_source == "sink place"
    assert marked(model.final_marking) == {"end": 1}


def test_no_final_marking_and_two_sinks(tmp_path: Path) -> None:
    path = pnml(tmp_path, places='<place id="dangling"/>')
    with pytest.raises(InputError, match=r"net\.pnml: .*2 sink places; pass final_marking="):
        load_model(path)
    assert load_model(path, final_marking="End").final_marking_source == "option"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"missing\.pnml: no such file"):
        load_model(tmp_path / "missing.pnml")


def test_directory_is_not_a_model(tmp_path: Path) -> None:
    folder = tmp_path / "folder.pnml"
    folder.mkdir()
    with pytest.raises(InputError, match="no such file"):
        load_model(folder)


@pytest.mark.parametrize("suffix", [".pnml", ".bpmn", ".PNML"])
@pytest.mark.parametrize("content", ["", "garbage <<", "<pnml><net>"])
def test_garbage_file(tmp_path: Path, suffix: str, content: str) -> None:
    path = tmp_path / f"garbage{suffix}"
    path.write_text(content)
    with pytest.raises(InputError, match=rf"garbage{suffix}: not a well-formed XML file"):
        load_model(path)


@pytest.mark.parametrize("name", ["other.pnml", "other.bpmn"])
def test_xml_without_a_net(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("<foo><bar/></foo>")
    with pytest.raises(InputError, match="no places or no transitions"):
        load_model(path)


def test_unknown_suffix(tmp_path: Path) -> None:
    path = tmp_path / "model.xes"
    path.write_text("<log/>")
    with pytest.raises(InputError, match=r"model\.xes: unknown model format '\.xes'"):
        load_model(path)


def test_arc_weight_two_is_refused(tmp_path: Path) -> None:
    arcs = (
        '<arc id="a1" source="start" target="t"><inscription><text>2</text></inscription></arc>'
        '<arc id="a2" source="t" target="end"/>'
    )
    with pytest.raises(InputError, match=r"arc start -> t has weight 2; only weight 1"):
        load_model(pnml(tmp_path, arcs=arcs))


def test_arc_weight_one_inscription_is_fine(tmp_path: Path) -> None:
    arcs = (
        '<arc id="a1" source="start" target="t"><inscription><text>1</text></inscription></arc>'
        '<arc id="a2" source="t" target="end"/>'
    )
    assert load_model(pnml(tmp_path, arcs=arcs)).visible_labels == {"A"}


def test_unparsable_inscription(tmp_path: Path) -> None:
    arcs = (
        '<arc id="a1" source="start" target="t"><inscription><text>x</text></inscription></arc>'
        '<arc id="a2" source="t" target="end"/>'
    )
    with pytest.raises(InputError, match=r"net\.pnml: cannot parse the PNML model"):
        load_model(pnml(tmp_path, arcs=arcs))


def test_reset_arc_is_refused(tmp_path: Path) -> None:
    arcs = (
        '<arc id="a1" source="start" target="t"/><arc id="a2" source="t" target="end"/>'
        '<place id="r"/><arc id="a3" source="r" target="t">'
        "<arctype><text>reset</text></arctype></arc>"
    )
    with pytest.raises(InputError, match=r"reset arc r -> t is not supported"):
        load_model(pnml(tmp_path, arcs=arcs))


def test_no_initial_marking(tmp_path: Path) -> None:
    path = pnml(tmp_path)
    path.write_text(
        path.read_text().replace("<text>1</text></initialMarking>", "</initialMarking>")
    )
    with pytest.raises(InputError, match="no initial marking"):
        load_model(path)


def test_loaded_model_checks_the_source() -> None:
    model = load_model(RUNNING_PNML)
    with pytest.raises(ValueError, match="final_marking_source must be one of"):
        LoadedModel(model.net, model.initial_marking, model.final_marking, "guess", None)  # type: ignore[arg-type]
