# -*- coding: utf-8 -*-
# vim: ft=sls
{#- kubernetes.certs: the certificates, laid down the way pillar
    kubernetes:certs_mode says: `pillar` (the default: from pillar, same as
    .present) or `enrolled` (keys made on this host, certificates signed by
    the master: .enrolled, see docs/enrollment.md). #}
{%- set tplroot = tpldir.split('/')[0] %}
{%- set mode = salt['pillar.get']('kubernetes:certs_mode', 'pillar') %}
{%- if mode not in ['pillar', 'enrolled'] %}
{{- raise('kubernetes:certs_mode: ' ~ mode ~ ' is not one of pillar, enrolled') }}
{%- endif %}

include:
  - {{ tplroot }}.certs.{{ 'enrolled' if mode == 'enrolled' else 'present' }}
