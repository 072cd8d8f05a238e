# -*- coding: utf-8 -*-
# vim: ft=sls
{#- One stage of a CA rotation, and its roll-out (docs/ca-rotation.md).

      salt-run state.orchestrate kubernetes.orch.rotate_ca \
        pillar="{k8s_rotate: {cluster_tag: prod, stage: trust} }"

    stage prepare: salt-run k8s-helper.rotate_ca stage=prepare, nothing else
    (the new CA goes to no host yet).
    stage trust, reissue, finish or abort:
      (reissue only: k8s-helper.verify first: every host must hold the trust
      bundle before anything the new CA signs is handed out)
      1. salt-run k8s-helper.rotate_ca stage=<stage>;
      2. refresh_pillar on the masters;
      3. each master in turn: kubernetes.running, then its apiserver must
         answer /healthz, its certificate verified with the ca.crt just laid
         down, before the next master is touched;
      4. the nodes: refresh_pillar and kubernetes.running, in batches;
      5. (trust and finish) k8s_cluster.cleanup on the first master: the
         listed workloads restart one pod at a time (the token secrets are
         kept unless cleanup: {delete_token_secrets: true});
      6. k8s-helper.verify on every host (after the clean-up, even when it
         failed).
    No kubelet.removed: the kubelet restarts, the pods keep running.

    A kubeadm set (the profile its cluster.yaml records) is rolled the same
    way; `ca` chooses which of its CAs (ca, etcd-ca, front-proxy-ca), one
    rotation at a time. Its hosts are found by the k8s_kubeadm ext_pillar's
    kubernetes:kubeadm_pki (role, cluster_tag), and there is no clean-up by
    default: kube-controller-manager republishes the kube-root-ca.crt
    ConfigMap that pods read, and an etcd or front-proxy CA is no pod's
    concern (give cleanup: {...} to restart workloads anyway).

    Pillar k8s_rotate: stage (required), cluster_tag (default), and as for
    kubernetes.orch.replace_certs: masters, nodes, nodes_tgt_type, batch,
    health_wait, health_interval, cleanup (arguments, or false), verify;
    for the runner: ca, keep_keys, key_type, ca_days, days. #}
{%- set tplroot = tpldir.split('/')[0] %}
{%- import tplroot ~ '/orch/rolling.jinja' as rolling with context %}
{%- set args = salt['pillar.get']('k8s_rotate', {}) %}
{%- if args is not mapping %}
{{-   raise('k8s_rotate must be a mapping, not ' ~ args | json) }}
{%- endif %}
{%- set runner_args = ['ca', 'keep_keys', 'key_type', 'ca_days', 'days'] %}
{%- set known = ['cluster_tag', 'stage', 'masters', 'nodes', 'nodes_tgt_type', 'batch',
                 'health_wait', 'health_interval', 'cleanup', 'verify'] + runner_args %}
{%- for key in args if key not in known %}
{{-   raise('k8s_rotate:' ~ key ~ ': unknown setting (known: ' ~ known | join(', ') ~ ')') }}
{%- endfor %}
{%- set stages = ['prepare', 'trust', 'reissue', 'finish', 'abort'] %}
{%- set stage = args.get('stage', '') %}
{%- if stage not in stages %}
{{-   raise('k8s_rotate:stage must be one of ' ~ stages | join(', ') ~ ', not ' ~ stage | json) }}
{%- endif %}
{%- set tag = args.get('cluster_tag', 'default') %}
{%- set profile = rolling.set_profile(tag) | trim %}
{%- set prefix = 'kubernetes-orch-rotate-' ~ stage %}
{%- set plan_args = {'cluster_tag': tag, 'stage': stage} %}
{%- for key in runner_args if key in args %}
{%-   do plan_args.update({key: args[key]}) %}
{%- endfor %}
{{ rolling.dry_run(prefix ~ '-rotate-ca-plan', 'k8s-helper.rotate_ca', plan_args) }}

{%- if stage == 'prepare' %}

{{ prefix }}-rotate-ca:
  salt.runner:
    - name: k8s-helper.rotate_ca
    - cluster_tag: {{ tag | json }}
    - stage: prepare
{%-   for key in runner_args if key in args %}
    - {{ key }}: {{ args[key] | json }}
{%-   endfor %}
{%- else %}
{%-   set masters = rolling.masters_json(tag, args.get('masters')) | load_json %}
{%-   if not masters %}
{{-     raise('k8s_rotate: no masters: no minion in the pillar cache has kubernetes:role: master '
               ~ 'and kubernetes:k8s_env: ' ~ tag ~ ' (seed), nor kubernetes:kubeadm_pki:role: '
               ~ 'master and kubernetes:kubeadm_pki:cluster_tag: ' ~ tag ~ ' (kubeadm); give '
               ~ 'k8s_rotate:masters') }}
{%-   endif %}
{%-   set members = rolling.members(tag) if profile == 'kubeadm' else 'I@kubernetes:k8s_env:' ~ tag %}
{%-   set nodes = args.get('nodes', members ~ ' and not L@' ~ masters | join(',')) %}
{%-   set nodes_tgt_type = args.get('nodes_tgt_type', 'list' if nodes is sequence and nodes is not string else 'compound') %}
{%-   set cluster = 'L@' ~ masters | join(',') ~ (' or ' ~ rolling.compound_term(nodes, nodes_tgt_type) if nodes else '') %}
{#-   The clean-up of a rotation keeps the token secrets unless told otherwise:
      their tokens stay valid (keep_keys) and the token controller rewrites
      their ca.crt itself; deleting them would only break pods that mount them. #}
{%-   set cleanup = args.get('cleanup', {} if stage in ['trust', 'finish'] and profile == 'seed' else False) %}
{%-   if cleanup is mapping %}
{%-     set cleanup = salt['slsutil.merge']({'delete_token_secrets': False}, cleanup) %}
{%-   endif %}
{%-   if stage == 'reissue' %}
{{ rolling.verify(prefix ~ '-bundle-everywhere', tag, cluster, 'compound', none) }}
{%-   endif %}

{{ prefix }}-rotate-ca:
  salt.runner:
    - name: k8s-helper.rotate_ca
    - cluster_tag: {{ tag | json }}
    - stage: {{ stage }}
{%-   for key in runner_args if key in args %}
    - {{ key }}: {{ args[key] | json }}
{%-   endfor %}
{%-   if stage == 'reissue' %}
    - require:
      - salt: {{ prefix }}-bundle-everywhere
{%-   endif %}
{{ rolling.refresh(prefix ~ '-masters-refresh-pillar', masters, 'list', prefix ~ '-rotate-ca') }}
{{ rolling.roll_masters(prefix, masters, prefix ~ '-masters-refresh-pillar', False,
                        args.get('health_wait', 120), args.get('health_interval', 2)) }}
{%-   set last = prefix ~ '-' ~ masters[-1] ~ '-healthz' %}
{%-   if nodes %}
{{ rolling.roll_nodes(prefix, nodes, nodes_tgt_type, args.get('batch', '25%'), last) }}
{%-     set last = prefix ~ '-nodes-running' %}
{%-   endif %}
{%-   if cleanup is not sameas false %}
{{ rolling.cleanup(prefix ~ '-cluster-cleanup', masters[0], cleanup, last) }}
{%-   endif %}
{#-   verify requires the roll-out, not the clean-up (see replace_certs.sls). #}
{%-   if args.get('verify', True) %}
{{ rolling.verify(prefix ~ '-verify', tag, cluster, 'compound', last) }}
{%-   endif %}
{%- endif %}
