# -*- coding: utf-8 -*-
# vim: ft=sls
{#- Renew a cluster's leaf certificates that are due, then hand them out.

      salt-run state.orchestrate kubernetes.orch.renew \
        pillar="{k8s_renew: {cluster_tag: default, threshold_days: 90} }"

    A seed set (the profile its cluster.yaml records):
    1. k8s-helper.renew with threshold_days: only leaves with fewer days left
       are reissued (from the same CA; the CA is never touched);
    2. the cluster's minions (pillar kubernetes:k8s_env == cluster_tag, or
       k8s_renew:tgt / tgt_type) refresh their pillar;
    3. they apply kubernetes.certs.present.
    Restarting the Kubernetes components that read the files is left to the
    operator (docs/lifecycle.md).

    A kubeadm set: the renewed files are read by static pods, which must
    restart, so the hosts are rolled as kubernetes.orch.replace_certs rolls
    them (without removing containers):
    1. k8s-helper.renew with threshold_days;
    2. the masters, one at a time: fresh pillar, kubernetes.running (the
       manifests carry the digest of their certificates, so the kubelet
       recreates the pods whose files changed), then k8s_cluster.healthz
       before the next master is touched;
    3. the nodes: fresh pillar, kubernetes.running, in batches;
    4. salt-run k8s-helper.verify on every host of the cluster.
    Settings (k8s_renew), besides cluster_tag and threshold_days: masters,
    nodes, nodes_tgt_type, batch, health_wait, health_interval, verify, with
    the meaning they have in kubernetes.orch.replace_certs. #}
{%- set tplroot = tpldir.split('/')[0] %}
{%- import tplroot ~ '/orch/rolling.jinja' as rolling with context %}
{%- set args = salt['pillar.get']('k8s_renew', {}) %}
{%- if args is not mapping %}
{{-   raise('k8s_renew must be a mapping, not ' ~ args | json) }}
{%- endif %}
{%- set cluster_tag = args.get('cluster_tag', 'default') %}
{%- set profile = rolling.set_profile(cluster_tag) | trim %}
{%- set known = {'seed': ['cluster_tag', 'threshold_days', 'tgt', 'tgt_type'],
                 'kubeadm': ['cluster_tag', 'threshold_days', 'masters', 'nodes', 'nodes_tgt_type',
                             'batch', 'health_wait', 'health_interval', 'verify']}[profile] %}
{%- for key in args if key not in known %}
{{-   raise('k8s_renew:' ~ key ~ ': unknown setting for a ' ~ profile ~ ' set (known: '
            ~ known | join(', ') ~ ')') }}
{%- endfor %}
{{ rolling.dry_run('kubernetes-orch-renew-due-leaves-plan', 'k8s-helper.renew',
                   {'cluster_tag': cluster_tag,
                    'threshold_days': args.get('threshold_days', 90)}) }}

kubernetes-orch-renew-due-leaves-salt-runner:
  salt.runner:
    - name: k8s-helper.renew
    - cluster_tag: {{ cluster_tag | json }}
    - threshold_days: {{ args.get('threshold_days', 90) | json }}
{%- if profile == 'kubeadm' %}
{%-   set prefix = 'kubernetes-orch-renew' %}
{%-   set masters = rolling.masters_json(cluster_tag, args.get('masters')) | load_json %}
{%-   if not masters %}
{{-     raise('k8s_renew: no masters: no minion in the pillar cache has kubernetes:kubeadm_pki:role: '
              ~ 'master and kubernetes:kubeadm_pki:cluster_tag: ' ~ cluster_tag
              ~ '; give k8s_renew:masters') }}
{%-   endif %}
{%-   set nodes = args.get('nodes', rolling.members(cluster_tag) ~ ' and not L@' ~ masters | join(',')) %}
{%-   set nodes_tgt_type = args.get('nodes_tgt_type', 'list' if nodes is sequence and nodes is not string else 'compound') %}
{%-   set cluster = 'L@' ~ masters | join(',') ~ (' or ' ~ rolling.compound_term(nodes, nodes_tgt_type) if nodes else '') %}
{{ rolling.refresh(prefix ~ '-masters-refresh-pillar', masters, 'list',
                   'kubernetes-orch-renew-due-leaves-salt-runner') }}
{{ rolling.roll_masters(prefix, masters, prefix ~ '-masters-refresh-pillar', False,
                        args.get('health_wait', 120), args.get('health_interval', 2)) }}
{%-   set last = prefix ~ '-' ~ masters[-1] ~ '-healthz' %}
{%-   if nodes %}
{{ rolling.roll_nodes(prefix, nodes, nodes_tgt_type, args.get('batch', '25%'), last) }}
{%-     set last = prefix ~ '-nodes-running' %}
{%-   endif %}
{%-   if args.get('verify', True) %}
{{ rolling.verify(prefix ~ '-verify', cluster_tag, cluster, 'compound', last) }}
{%-   endif %}
{%- else %}
{%-   set tgt = args.get('tgt', 'kubernetes:k8s_env:' ~ cluster_tag) %}
{%-   set tgt_type = args.get('tgt_type', 'pillar') %}

kubernetes-orch-renew-refresh-pillar-salt-function:
  salt.function:
    - name: saltutil.refresh_pillar
    - tgt: {{ tgt | json }}
    - tgt_type: {{ tgt_type | json }}
    - require:
      - salt: kubernetes-orch-renew-due-leaves-salt-runner

kubernetes-orch-renew-certs-present-salt-state:
  salt.state:
    - tgt: {{ tgt | json }}
    - tgt_type: {{ tgt_type | json }}
    - sls: kubernetes.certs.present
    - require:
      - salt: kubernetes-orch-renew-refresh-pillar-salt-function
{%- endif %}
