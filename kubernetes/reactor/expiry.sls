# -*- coding: utf-8 -*-
# vim: ft=sls
{#- Reactor for `k8s-helper/expiry/<cluster_tag>`, the event
    `salt-run k8s-helper.check_expiration fire_event=True` fires when a
    certificate of the cluster is due or expired (docs/lifecycle.md).

    Master config:

      reactor:
        - 'k8s-helper/expiry/*':
          - salt://kubernetes/reactor/expiry.sls

    It starts the kubernetes.orch.renew orchestration for that cluster.  Only
    the cluster's name is taken from the event: any minion can put an event
    with this tag on the master's bus, so the orchestration decides for itself
    what is due (renew threshold_days=...), and a forged or repeated event
    renews nothing that is not due. #}
{%- set threshold_days = 90 %}
{%- set cluster_tag = data.get('cluster_tag', '') if data is mapping else '' %}
{#- Leaves to renew: CAs alone (data.cas) are for the operator (CA rotation). #}
{%- if cluster_tag and data.get('renew') %}

kubernetes-reactor-expiry-{{ cluster_tag }}-orchestrate:
  runner.state.orchestrate:
    - args:
      - mods: kubernetes.orch.renew
      - pillar:
          k8s_renew:
            cluster_tag: {{ cluster_tag | json }}
            threshold_days: {{ threshold_days }}
{%- endif %}
