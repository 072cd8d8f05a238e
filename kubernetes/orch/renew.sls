# -*- coding: utf-8 -*-
# vim: ft=sls
{#- Renew a cluster's leaf certificates that are due, then hand them out.

      salt-run state.orchestrate kubernetes.orch.renew \
        pillar="{k8s_renew: {cluster_tag: default, threshold_days: 90} }"

    1. k8s-helper.renew with threshold_days: only leaves with fewer days left
       are reissued (from the same CA; the CA is never touched);
    2. the cluster's minions (pillar kubernetes:k8s_env == cluster_tag, or
       k8s_renew:tgt / tgt_type) refresh their pillar;
    3. they apply kubernetes.certs.present.
    Restarting the Kubernetes components that read the files is left to the
    operator (docs/lifecycle.md). #}
{%- set args = salt['pillar.get']('k8s_renew', {}) %}
{%- set cluster_tag = args.get('cluster_tag', 'default') %}
{%- set tgt = args.get('tgt', 'kubernetes:k8s_env:' ~ cluster_tag) %}
{%- set tgt_type = args.get('tgt_type', 'pillar') %}
{%- import tpldir.split('/')[0] ~ '/orch/rolling.jinja' as rolling with context %}
{{ rolling.dry_run('kubernetes-orch-renew-due-leaves-plan', 'k8s-helper.renew',
                   {'cluster_tag': cluster_tag,
                    'threshold_days': args.get('threshold_days', 90)}) }}

kubernetes-orch-renew-due-leaves-salt-runner:
  salt.runner:
    - name: k8s-helper.renew
    - cluster_tag: {{ cluster_tag | json }}
    - threshold_days: {{ args.get('threshold_days', 90) | json }}

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
