"""The PKI of a Kubernetes cluster, as plain Python.

This module has no Salt dunders: the runner (``_runners/k8s_helper.py``) and the
minion-side modules are thin layers over it, and the unit tests import it
directly.  Salt loads it from ``_utils/`` (after ``saltutil.sync_utils``, or with
``utils_dirs`` pointing here), which puts this folder on ``sys.path`` while the
runner and execution modules are imported.

Layers, top to bottom:

* input checking (``check_*``): every bad argument raises :class:`InputError`
  naming the parameter;
* certificate building (:func:`new_key`, :func:`build_ca`, :func:`issue_leaf`)
  on one shared builder;
* inspection (:func:`load_cert`, :func:`describe_cert`, :func:`key_matches`,
  :func:`signed_by`);
* what pillar hands a minion (:func:`check_distribution`) and whether a PEM
  bundle holds a certificate (:func:`bundle_has`), for the minion-side states;
* a certificate *set* on disk: :func:`plan_set` decides what to keep and what to
  (re)issue, :func:`ensure_set` writes it atomically under a lock.
"""

from .backups import (  # noqa: F401
    backups,
)
from .checks import (  # noqa: F401
    check_bool,
    check_cluster_tag,
    check_days,
    check_dns_name,
    check_endpoint,
    check_hosts,
    check_ip,
    check_key_type,
    split_sans,
)
from .crypto import (  # noqa: F401
    build_ca,
    capped_end,
    cert_pem,
    cert_sans,
    cert_usages,
    days_left,
    describe_cert,
    fingerprint,
    is_ca,
    issue_leaf,
    key_matches,
    key_pem,
    key_type_of,
    key_works,
    load_cert,
    load_certs,
    load_der_cert,
    load_key,
    load_public_key,
    new_key,
    public_key_fingerprint,
    public_pem,
    renewal_due,
    renewal_window_days,
    satisfies,
    signed_by,
)
from .defaults import (  # noqa: F401
    ANCESTOR_MODE,
    BACKDATE,
    BACKUP_DIR,
    CA_FILE_ACTIONS,
    CERT_MODE,
    DEFAULT_BACKUP_KEEP,
    DEFAULT_CA_DAYS,
    DEFAULT_KEY_TYPE,
    DEFAULT_LEAF_DAYS,
    DEFAULT_PKI_ROOT,
    DEFAULT_RENEW_BEFORE_DAYS,
    DIR_MODE,
    KEY_MODE,
    KEY_TYPES,
    KUBEADM_PORT,
    KUBECONFIG_SUFFIXES,
    MANIFEST_FILE,
    NEXT_CA,
    PEM_SUFFIXES,
    backup_keep,
    pki_root,
)
from .distribution import (  # noqa: F401
    bundle_has,
    bundle_pattern,
    check_distribution,
    check_kubeadm_host,
    normalize_pem,
    symlinked,
)
from .enroll import (  # noqa: F401
    ENROLLED_DIR,
    ENROLLED_KUBEADM_FILES,
    HOST_MEMBERS,
    MASTER_MEMBERS,
    SEED_HOST_MEMBERS,
    SEED_MASTER_MEMBERS,
    EnrollRefused,
    check_csr,
    check_reply,
    copies_of_removed_hosts,
    csr_for,
    enrolled_problem,
    install_enrolled,
    pillar_share,
    role_members,
    seed_pillar_share,
    sign_request,
)
from .errors import (  # noqa: F401
    InputError,
    PKIError,
    RotationRefused,
    SetError,
)
from .expiry import (  # noqa: F401
    STATUSES,
    certificates_in_file,
    expiry_alert,
    expiry_report,
    expiry_status,
    kubeadm_expiry,
)
from .guard import (  # noqa: F401
    check_set_folder,
    check_store,
    read_set_file,
)
from .kubeadm_certs import (  # noqa: F401
    check_kubeadm_hosts,
    kubeadm_label,
    kubeadm_name,
    kubeadm_restarts,
    renew_kubeadm_set,
    select_kubeadm_certs,
    set_hosts,
)
from .kubeconfig import (  # noqa: F401
    Kubeconfig,
    parse_kubeconfig,
    render_kubeconfig,
)
from .lifecycle import (  # noqa: F401
    check_renew_names,
    ensure_set,
    prune_backups,
    renew_set,
    write_plan,
)
from .manifest import (  # noqa: F401
    MANIFEST_FORMAT,
    PROFILE_DEFAULTS,
    canonical,
    enrolled_leftovers,
    explain_changes,
    files_profile,
    host_role,
    infer_settings,
    manifest_path,
    parse_manifest,
    read_manifest,
    render_manifest,
    require_profile,
    resolve_settings,
    set_profile,
    specs_for,
)
from .pem import (  # noqa: F401
    CERT_LABELS,
    PRIVATE_KEY_LABELS,
    PUBLIC_KEY_LABELS,
    bundle_problem,
    strict_pem,
)
from .plan import (  # noqa: F401
    TOKEN_KEY_LEAF,
    Plan,
    describe_dry_run,
    describe_plan,
    leaf_names,
    plan_files,
    plan_set,
    token_key_warning,
    token_signing_leaf,
)
from .profiles import (  # noqa: F401
    DIST_CA,
    DIST_KEYS,
    DIST_PAIRS,
    KEY_PAIRS,
    KUBEADM,
    KUBEADM_ADMIN_GROUP,
    KUBEADM_CERT_NAMES,
    KUBEADM_HOST_FILES,
    KUBEADM_HOSTS_DIR,
    MASTERS_ONLY,
    PILLAR_FILES,
    PROFILES,
    ROLE_FORBIDDEN,
    SEED,
    SERVICE_ACCOUNT_FILES,
    Member,
    cert_tree,
    kubeadm_file_mode,
    kubeadm_host_files,
    kubeadm_specs,
    kubelet_serving_spec,
    readers,
    role_forbidden,
    seed_specs,
)
from .rotation import (  # noqa: F401
    NEXT_STAGE,
    ROTATION_CAS,
    ROTATION_STAGES,
    ROTATION_STATES,
    Rotation,
    check_rotation_ca,
    check_rotation_stage,
    next_ca_name,
    read_rotation,
    rotate_ca,
    rotation_members,
    rotation_status,
)
from .signer import (  # noqa: F401
    LOCAL,
    LocalSigner,
    ca_keys_elsewhere,
    check_backend,
)
from .specs import (  # noqa: F401
    CASpec,
    KeyPairSpec,
    KubeconfigSpec,
    LeafSpec,
    spec_from_ca,
    spec_from_cert,
)
from .store import (  # noqa: F401
    Item,
    created_cas,
    read_file,
    read_item,
    read_keypair,
    read_kubeconfig,
    read_pair,
    spec_files,
)
from .verify import (  # noqa: F401
    VERIFY_OK,
    enrolled_copies,
    enrolled_paths,
    enrolled_probe_problem,
    kubeadm_probe_problem,
    kubeadm_reference,
    kubeadm_share,
    probe_answer_problem,
    verify_enrolled_host,
    verify_host,
    verify_kubeadm_host,
    verify_reference,
    verify_summary,
)
from .writer import (  # noqa: F401
    locked,
)
