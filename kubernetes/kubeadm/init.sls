# -*- coding: utf-8 -*-
# vim: ft=sls
{#- kubernetes.kubeadm: the kubeadm profile's files from pillar, laid down (same as .present). #}
{%- set tplroot = tpldir.split('/')[0] %}

include:
  - {{ tplroot }}.kubeadm.present
