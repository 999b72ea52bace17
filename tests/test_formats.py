"""The file conventions have one owner (issue 20): every format's endings and names come from gliomaseg.data.formats."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import gliomaseg
from gliomaseg.core.errors import DataError
from gliomaseg.core.io import check_name, clean_name
from gliomaseg.data.formats.dicom_series import DICOM
from gliomaseg.data.formats.nifti_volumes import NIFTI
from gliomaseg.data.formats.prepared_csv import CSV
from gliomaseg.data.formats.registry import format_for, is_mask, split_name, supported_endings
from gliomaseg.data.formats.slice_files import SLICES

PACKAGE = Path(gliomaseg.__file__).parent


def test_each_ending_has_its_format():
    assert format_for("P_1.tif") is SLICES and format_for("P_1.PNG") is SLICES and format_for("case.nii.gz") is NIFTI
    assert format_for("case.nii") is NIFTI and format_for("x.dcm") is DICOM and format_for("data.csv") is CSV
    assert format_for("x.zip") is None and format_for("x.gz") is None
    assert supported_endings() == ['.bmp', '.csv', '.dcm', '.dicom', '.jpeg', '.jpg', '.nii', '.nii.gz', '.png', '.tif', '.tiff']


def test_names_of_truth_and_predictions():
    assert SLICES.mask_name("P_3", ".tif") == "P_3_mask.tif" and SLICES.prediction_name("P_3") == "P_3_pred.png"
    assert SLICES.overlay_name("P_3") == "P_3_overlay.png"
    assert NIFTI.mask_name("case") == NIFTI.prediction_name("case") == "case_mask.nii.gz"
    assert DICOM.prediction_name("case") == "case_seg.dcm"
    assert is_mask(Path("P_3_mask.tif")) and is_mask(Path("case_mask.nii.gz")) and not is_mask(Path("case.nii.gz"))
    assert split_name("Case.NII.GZ") == ("Case", ".NII.GZ") and split_name("a.zip") == ("a", ".zip")


def test_refuse_in_the_cli_rename_in_the_viewer():
    with pytest.raises(DataError, match="cannot name a file"):
        check_name("../x", "patient name", "data.csv")
    assert check_name("P_1", "patient name", "data.csv") == "P_1"
    assert clean_name("../x") == "x"


def _docstring_lines(text: str) -> set[int]:
    import ast

    lines = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                lines.update(range(first.lineno, first.end_lineno + 1))
    return lines


def test_no_module_outside_the_formats_spells_a_file_name_convention():
    spelled = re.compile(r"""[>"'{}]_(pred|mask|seg|overlay)(\.png|\.tif|\.nii\.gz|\.dcm)""")
    wrong = []
    for p in PACKAGE.rglob("*.py"):
        if "formats" in p.parts:
            continue
        text = p.read_text(encoding="utf-8")
        docs = _docstring_lines(text)  # documentation may name the files it is about
        wrong += [f"{p.relative_to(PACKAGE)}:{n}" for n, line in enumerate(text.splitlines(), 1)
                  if n not in docs and spelled.search(line) and not line.lstrip().startswith(("#", '"', "'", "``", "-"))
                  and "help=" not in line and "print(" not in line and "DataError(" not in line]
    assert not wrong, "file names spelled outside gliomaseg.data.formats:\n" + "\n".join(wrong)
