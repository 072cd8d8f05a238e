# -*- coding: utf-8 -*-
# vim: ft=sls
{#- kubernetes.kubelet: the kubelet configured and running (same as .running). #}
{%- set tplroot = tpldir.split('/')[0] %}

include:
  - {{ tplroot }}.kubelet.running
