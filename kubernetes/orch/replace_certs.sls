# -*- coding: utf-8 -*-
# vim: ft=sls
{#- Replace a cluster's certificates in one command (docs/replace-certs.md).

      salt-run state.orchestrate kubernetes.orch.replace_certs \
        pillar="{k8s_replace: {cluster_tag: prod, generate: {force_regen: true} } }"

    1. the set: generated (`generate`: generate_certs arguments) or the one
       already prepared on the master (checked with check_expiration);
    2. saltutil.refresh_pillar on the masters;
    3. each master in turn: kubernetes.kubelet.removed, kubernetes.running,
       then its apiserver must answer /healthz with a certificate the new CA
       verifies before the next master is touched;
    4. the nodes: refresh_pillar, kubernetes.running, in batches;
    5. on the first master, kubectl deletes the service-account token secrets
       of kube-system and rolls the listed workloads (k8s_cluster.cleanup);
    6. salt-run k8s-helper.verify on every host of the cluster (after the
       clean-up, even when it failed: both are reported).
    Every other step requires the one before: the first failure stops the
    run, and the hosts after it are left as they were.
    Add --out=k8s_orch for a short summary per step and host (_output/k8s_orch.py).

    Pillar k8s_replace (all optional):
      cluster_tag        default
      generate           false: take the set as it is on the master;
                         a mapping: arguments of generate_certs (force_regen...)
      masters            minion ids, in order; default: the cluster's minions
                         whose pillar has kubernetes:role: master (seed) or
                         kubernetes:kubeadm_pki:role: master (kubeadm)
      nodes, nodes_tgt_type   target of the nodes; default: the minions of
                         kubernetes:k8s_env: <cluster_tag> (seed) or
                         kubernetes:kubeadm_pki:cluster_tag: <cluster_tag>
                         (kubeadm) that are not masters; false: no nodes
      batch              nodes per batch (a number or a percentage), default 25%
      remove_containers  kubernetes.kubelet.removed on masters first (True)
      health_wait, health_interval   seconds, default 120 and 2
      cleanup            k8s_cluster.cleanup arguments; false: skip it
      verify             True #}
{%- set tplroot = tpldir.split('/')[0] %}
{%- import tplroot ~ '/orch/rolling.jinja' as rolling with context %}
{%- set args = salt['pillar.get']('k8s_replace', {}) %}
{%- if args is not mapping %}
{{-   raise('k8s_replace must be a mapping, not ' ~ args | json) }}
{%- endif %}
{%- set known = ['cluster_tag', 'generate', 'masters', 'nodes', 'nodes_tgt_type', 'batch',
                 'remove_containers', 'health_wait', 'health_interval', 'cleanup', 'verify'] %}
{%- for key in args if key not in known %}
{{-   raise('k8s_replace:' ~ key ~ ': unknown setting (known: ' ~ known | join(', ') ~ ')') }}
{%- endfor %}
{%- set tag = args.get('cluster_tag', 'default') %}
{%- set generate = args.get('generate', False) %}
{%- if generate is not mapping and generate not in [True, False] %}
{{-   raise('k8s_replace:generate must be false or a mapping of generate_certs arguments') }}
{%- endif %}
{%- set masters = rolling.masters_json(tag, args.get('masters')) | load_json %}
{%- if not masters %}
{{-   raise('k8s_replace: no masters: no minion in the pillar cache has kubernetes:role: master '
               ~ 'and kubernetes:k8s_env: ' ~ tag ~ ', nor kubernetes:kubeadm_pki:role: master and '
               ~ 'kubernetes:kubeadm_pki:cluster_tag: ' ~ tag ~ '; give k8s_replace:masters') }}
{%- endif %}
{%- set nodes = args.get('nodes', rolling.members(tag) ~ ' and not L@' ~ masters | join(',')) %}
{%- set nodes_tgt_type = args.get('nodes_tgt_type', 'list' if nodes is sequence and nodes is not string else 'compound') %}
{%- set cluster = 'L@' ~ masters | join(',') ~ (' or ' ~ rolling.compound_term(nodes, nodes_tgt_type) if nodes else '') %}
{%- set cleanup = args.get('cleanup', {}) %}
{%- set prefix = 'kubernetes-orch-replace' %}

{%- if generate %}
{{ rolling.dry_run(prefix ~ '-set-plan', 'k8s-helper.generate_certs',
                   salt['slsutil.merge']({'cluster_tag': tag},
                                         generate if generate is mapping else {})) }}

{{ prefix }}-set:
  salt.runner:
    - name: k8s-helper.generate_certs
    - cluster_tag: {{ tag | json }}
{%-   for key, value in (generate if generate is mapping else {}) | dictsort %}
    - {{ key }}: {{ value | json }}
{%-   endfor %}
{%- else %}

{{ prefix }}-set:
  salt.runner:
    - name: k8s-helper.check_expiration
    - cluster_tag: {{ tag | json }}
    - table: False
{%- endif %}
{{ rolling.refresh(prefix ~ '-masters-refresh-pillar', masters, 'list', prefix ~ '-set') }}
{{ rolling.roll_masters(prefix, masters, prefix ~ '-masters-refresh-pillar',
                        args.get('remove_containers', True),
                        args.get('health_wait', 120), args.get('health_interval', 2)) }}
{%- set last = prefix ~ '-' ~ masters[-1] ~ '-healthz' %}
{%- if nodes %}
{{ rolling.roll_nodes(prefix, nodes, nodes_tgt_type, args.get('batch', '25%'), last) }}
{%-   set last = prefix ~ '-nodes-running' %}
{%- endif %}
{%- if cleanup is not sameas false %}
{{ rolling.cleanup(prefix ~ '-cluster-cleanup', masters[0], cleanup, last) }}
{%- endif %}
{#- verify requires the roll-out, not the clean-up: a clean-up that fails
    (no cluster API) must not hide what the hosts hold.  Written after it,
    it runs after it (states run in the order written). #}
{%- if args.get('verify', True) %}
{{ rolling.verify(prefix ~ '-verify', tag, cluster, 'compound', last) }}
{%- endif %}
