# -*- coding: utf-8 -*-
# vim: ft=sls
{#- kubernetes.certs: the certificates from pillar, laid down (same as .present). #}
{%- set tplroot = tpldir.split('/')[0] %}

include:
  - {{ tplroot }}.certs.present
