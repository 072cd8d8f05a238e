# -*- coding: utf-8 -*-
# vim: ft=sls
{#- kubernetes: the whole host, up and running with its certificates (the same
    as kubernetes.running): what `state.apply kubernetes` is expected to do
    with a Kubernetes formula.  Only the certificates: kubernetes.certs;
    taking a host down: kubernetes.kubelet.removed, kubernetes.certs.removed. #}
{%- set tplroot = tpldir.split('/')[0] %}

include:
  - {{ tplroot }}.running
